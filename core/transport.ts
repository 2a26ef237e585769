/**
 * Everything between the library and the SDK client's `send`:
 *
 * - **Deadlines.** An operation (an acquire, a lease commit, a repository
 *   call) runs in a deadline scope; every command sent inside it carries the
 *   scope's abort signal, so no call outlives it. Commands sent outside a
 *   scope get a per-command default deadline. A read is aborted at the
 *   deadline; a write is not (the caller is answered, the write finishes in
 *   the background for a bounded grace, and a {@linkcode LateSink} learns
 *   how it ended): see `sendWrite`.
 * - **At most once.** A write is not idempotent (`ADD tk -1000`), but the
 *   SDK retries a 500, a reset connection or a timeout, which may have
 *   applied: a blind retry charges twice. A per-attempt guard lets the SDK
 *   retry a write only when the failed attempt certainly did not apply
 *   (throttling, transaction conflicts, a refused connection); otherwise the
 *   write fails with {@linkcode AmbiguousWriteError} and the library decides.
 * - **Server time.** The `Date` header of every answer bounds the offset
 *   between the local clock and DynamoDB's ({@linkcode ClockSync}).
 *
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";
import type { Clock } from "./clock.ts";
import { errorName } from "./_sdk_errors.ts";
import {
  cancelDeadline,
  type Deadline,
  scheduleDeadline,
} from "./_deadline_timer.ts";

const scope = new AsyncLocalStorage<AbortSignal>();

/** Deadline options of every call that reaches DynamoDB. */
export interface DeadlineOptions {
  /** Aborts the call (it then fails as DynamoDB being unavailable). */
  readonly signal?: AbortSignal;
  /** Milliseconds the whole call may take, retries and backoff included. */
  readonly timeoutMs?: number;
}

/** The reason of a signal aborted by a deadline. */
export class DeadlineExceededError extends Error {
  /** The deadline in milliseconds. */
  readonly timeoutMs: number;
  /** Creates the reason. */
  constructor(timeoutMs: number) {
    super(`The call did not finish within its deadline of ${timeoutMs} ms`);
    this.name = "DeadlineExceededError";
    this.timeoutMs = timeoutMs;
  }
}

/**
 * A write whose earlier attempt may have applied: the SDK was about to send
 * it again and the guard stopped it. `cause` is the first attempt's error.
 */
export class AmbiguousWriteError extends Error {
  /** Creates the error. */
  constructor(cause: unknown) {
    super(
      `A write failed in a way that may have applied it (${
        errorName(cause) || String(cause)
      }); it was not sent again`,
      { cause },
    );
    this.name = "AmbiguousWriteError";
  }
}

/**
 * A write whose caller's deadline passed while no attempt of it was on the
 * wire and none had failed in a way that may have applied it: it was
 * never applied, and no attempt will be sent any more.
 */
export class WriteNotSentError extends Error {
  /** Creates the error; `cause` is the deadline's reason (or the failure of a step before the send, `why`). */
  constructor(
    cause: unknown,
    why = "its deadline passed before it was sent",
  ) {
    super(
      `The write was not applied: ${why} (${
        errorName(cause) || String(cause)
      })`,
      { cause },
    );
    this.name = "WriteNotSentError";
  }
}

/**
 * Runs a step an operation takes before it sends its write (a deadline
 * check, a read of the item, a backoff wait) when nothing the operation
 * sent so far applied: a failure means the operation applied nothing, so
 * it fails as {@linkcode WriteNotSentError} (certainly not applied: not
 * reported stranded, resent by a retrying lease call) instead of as the
 * ambiguous abort reason.
 */
export async function beforeSend<T>(step: () => T | Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (e) {
    if (e instanceof WriteNotSentError) throw e;
    throw new WriteNotSentError(e, "it failed before its write was sent");
  }
}

/**
 * Runs `fn` in a deadline scope: the signal aborts at `timeoutMs` (or when
 * `options.signal` or an enclosing scope aborts). A nested scope can only
 * shorten the deadline.
 */
export async function withDeadline<T>(
  options: DeadlineOptions,
  defaultTimeoutMs: number,
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? defaultTimeoutMs;
  if (!(timeoutMs > 0) || !Number.isFinite(timeoutMs)) {
    throw new RangeError(
      `timeoutMs must be a positive number of milliseconds (got ${
        String(timeoutMs)
      })`,
    );
  }
  const ac = new AbortController();
  // The caller's signal and the enclosing scope's (no array: this runs per acquire).
  const given = options.signal;
  const enclosing = scope.getStore();
  const onParent = (e: Event): void =>
    ac.abort((e.target as AbortSignal).reason);
  if (given) link(given, ac, onParent);
  if (enclosing) link(enclosing, ac, onParent);
  const deadline = scheduleDeadline(
    timeoutMs,
    () => ac.abort(new DeadlineExceededError(timeoutMs)),
  );
  try {
    return await scope.run(ac.signal, () => fn(ac.signal));
  } finally {
    cancelDeadline(deadline);
    given?.removeEventListener("abort", onParent);
    enclosing?.removeEventListener("abort", onParent);
  }
}

/** Aborts `ac` with `parent` (at once when it already is). */
function link(
  parent: AbortSignal,
  ac: AbortController,
  onParent: (e: Event) => void,
): void {
  if (parent.aborted) ac.abort(parent.reason);
  else parent.addEventListener("abort", onParent, { once: true });
}

/** The signal of the enclosing deadline scope, if any. */
export function currentSignal(): AbortSignal | undefined {
  return scope.getStore();
}

/** Throws the abort reason when the enclosing deadline has passed. */
export function checkDeadline(): void {
  const s = scope.getStore();
  if (s?.aborted) throw s.reason;
}

/**
 * Writes the SDK must not resend blindly. `TransactWriteItems` is one too:
 * the SDK gives it a `ClientRequestToken` that real DynamoDB deduplicates,
 * but DynamoDB Local (and any emulator) may not, so the guard does not
 * rely on it.
 */
const WRITES = new Set([
  "UpdateItemCommand",
  "PutItemCommand",
  "DeleteItemCommand",
  "TransactWriteItemsCommand",
]);

const NOT_APPLIED_NAMES = new Set([
  "ThrottlingException",
  "ProvisionedThroughputExceededException",
  "RequestLimitExceeded",
  "TransactionConflictException",
  "TransactionInProgressException",
  "LimitExceededException",
]);

const NOT_SENT_CODES = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
]);

/**
 * Whether a failed write certainly did not apply: DynamoDB refused it
 * before applying (throttling, conflicts, a failed condition, validation),
 * or the request never left (connection refused). A 500, a reset or
 * timed-out connection and an abort after sending are ambiguous.
 */
export function certainlyNotApplied(e: unknown): boolean {
  if (e instanceof AmbiguousWriteError) return false;
  if (e instanceof WriteNotSentError) return true;
  const name = errorName(e);
  if (NOT_APPLIED_NAMES.has(name)) return true;
  if (
    name === "ConditionalCheckFailedException" ||
    name === "TransactionCanceledException" || name === "ValidationException"
  ) return true;
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === "string" && NOT_SENT_CODES.has(code)) return true;
  const status = (e as { $metadata?: { httpStatusCode?: number } } | null)
    ?.$metadata?.httpStatusCode;
  return typeof status === "number" && status >= 400 && status < 500;
}

/**
 * Bounds on the offset between the local clock and DynamoDB's, from the
 * second-resolution `Date` header: an answer dated `D` was produced at some
 * server time in `[D, D + 1 s)`, between the local send and receive times,
 * so `offset ∈ [D − received, D + 1 s − sent]`. Intervals from successive
 * answers are intersected (they narrow to about one round trip as answers
 * land at different sub-second phases); a sample that contradicts the
 * interval (a clock step) starts a new one.
 */
export class ClockSync {
  #lo = -Infinity;
  #hi = Infinity;
  #samples = 0;

  /** Records one answer. */
  observe(sentMs: number, receivedMs: number, dateHeader: string): void {
    const d = Date.parse(dateHeader);
    if (!Number.isFinite(d)) return;
    const lo = d - receivedMs;
    const hi = d + 1000 - sentMs;
    const nlo = Math.max(this.#lo, lo);
    const nhi = Math.min(this.#hi, hi);
    if (nlo > nhi) {
      this.#lo = lo;
      this.#hi = hi;
    } else {
      this.#lo = nlo;
      this.#hi = nhi;
    }
    this.#samples++;
  }

  /** The bounds in milliseconds, `[lo, hi]` (infinite before any answer). */
  get bounds(): readonly [number, number] {
    return [this.#lo, this.#hi];
  }

  /** Answers seen. */
  get samples(): number {
    return this.#samples;
  }

  /**
   * Whether the next answer is worth sampling: every one of the first 64,
   * then one in 16 (a narrow interval stays narrow; a clock step is still
   * seen within a few seconds of traffic).
   */
  wants(): boolean {
    this.#asked++;
    return this.#samples < 64 || this.#asked % 16 === 0;
  }
  #asked = 0;

  /**
   * The smallest correction consistent with the evidence: 0 while the local
   * clock may be right, else the nearest bound (a clock 60 s ahead is moved
   * back to within the interval's width of the server's).
   */
  offset(): number {
    if (this.#lo <= 0 && this.#hi >= 0) return 0;
    return this.#lo > 0 ? this.#lo : this.#hi;
  }

  /** A clock that reads `base` corrected by {@linkcode ClockSync.offset}. */
  clock(base: Clock): Clock {
    return {
      now: () => base.now() + this.offset(),
      sleep: (ms, signal) => base.sleep(ms, signal),
    };
  }
}

/** The `send` of an SDK client (or a fake). */
export type Send = (
  command: unknown,
  options?: { abortSignal?: AbortSignal },
) => Promise<unknown>;

interface MiddlewareStackLike {
  add(
    mw: (
      next: (args: unknown) => Promise<unknown>,
      context: unknown,
    ) => (args: unknown) => Promise<unknown>,
    options: { step: string; priority?: string; name?: string },
  ): void;
}

const GUARDED = Symbol("zaelGuarded");

/** Options of {@linkcode guardedSend}. */
export interface TransportOptions {
  /** Deadline of a command sent outside any deadline scope. */
  readonly defaultTimeoutMs: number;
  /** Learns the server time from answers, when given. */
  readonly clockSync?: ClockSync | undefined;
  /** The local clock the sync measures (the base clock). */
  readonly localClock: Clock;
  /** How long a write runs on after its caller's deadline. @default {@linkcode WRITE_GRACE_MS} */
  readonly writeGraceMs?: number;
}

/**
 * Wraps a client's `send` with deadlines, the at-most-once write guard and
 * the server-time sampling. Commands without a middleware stack (fakes) get
 * the deadline only.
 */
export function guardedSend(send: Send, options: TransportOptions): Send {
  const grace = options.writeGraceMs ?? WRITE_GRACE_MS;
  return async (command, sendOptions) => {
    const stack = (command as { middlewareStack?: MiddlewareStackLike })
      ?.middlewareStack;
    const marked = command as { [GUARDED]?: boolean };
    const write = WRITES.has(
      (command as { constructor?: { name?: string } })?.constructor?.name ??
        "",
    );
    let state: WriteState | null = null;
    if (stack && !marked[GUARDED]) {
      marked[GUARDED] = true;
      if (write) {
        state = { deadline: null, inFlight: 0, maybeApplied: false };
        addWriteGuard(stack, state);
      }
      if (options.clockSync?.wants()) addClockSample(stack, options);
    }
    const outer = sendOptions?.abortSignal ?? currentSignal();
    if (outer) {
      if (outer.aborted) throw outer.reason;
      return write
        ? await sendWrite(send, command, outer, grace, state)
        : await send(command, { abortSignal: outer });
    }
    return await withDeadline(
      {},
      options.defaultTimeoutMs,
      (signal) =>
        write
          ? sendWrite(send, command, signal, grace, state)
          : send(command, { abortSignal: signal }),
    );
  };
}

/** What the write guard knows of one write's attempts. */
interface WriteState {
  /** The caller's deadline (set when the write is sent). */
  deadline: AbortSignal | null;
  /** Attempts on the wire now. */
  inFlight: number;
  /** An attempt failed in a way that may have applied it. */
  maybeApplied: boolean;
}

/**
 * How long a write keeps running after its caller's deadline passed before
 * it is aborted (a silent endpoint cannot hold it forever).
 */
export const WRITE_GRACE_MS = 10_000;

/**
 * How a write ended whose caller gave up on it at its deadline:
 * `applied` (it succeeded: applied exactly once, since the guard sends no
 * attempt after the deadline and never resends one that may have applied),
 * `notApplied` (it failed in a way that certainly did not apply it, see
 * {@linkcode certainlyNotApplied}), `unknown` (an ambiguous failure, or
 * its grace ran out).
 */
export type LateOutcome = "applied" | "notApplied" | "unknown";

/**
 * Learns the late outcome of a write sent in its scope ({@linkcode watchLate})
 * whose caller's deadline passed while the write was on the wire or may
 * have applied. Called synchronously when the caller is answered, before
 * the caller sees the deadline's reason; never for a write that settled in
 * time or that certainly was not sent ({@linkcode WriteNotSentError}).
 * `unplaced`, given for a coalesced lease delta
 * (`acquire/delta_coalescer.ts`) and for the debt write of
 * `BucketWriter.apply` (which places none of the give-back), resolves with
 * the outcome to the millitokens of the caller's give-back the write could
 * not place once it `applied` (what `BucketWriter.apply` returns in time).
 */
export type LateSink = (
  outcome: Promise<LateOutcome>,
  unplaced?: Promise<bigint>,
) => void;

/** A sink keeping a write's late outcome with the part of its give-back it could not place (`0n` when not told). */
export function lateWithUnplaced(
  keep: (late: Promise<[LateOutcome, bigint]>) => void,
): LateSink {
  return (p, u) => keep(Promise.all([p, u ?? 0n]));
}

const lateScope = new AsyncLocalStorage<LateSink>();

/**
 * Runs `fn` with `sink` learning the late outcome of the writes it sends
 * (one operation's write, e.g. one side of an acquire: at most one of its
 * writes is on the wire when its deadline passes).
 */
export function watchLate<T>(sink: LateSink, fn: () => T): T {
  return lateScope.run(sink, fn);
}

/** The sink of the enclosing {@linkcode watchLate} scope, if any. */
export function currentLateSink(): LateSink | undefined {
  return lateScope.getStore();
}

/** The late outcome of a write that failed with `e`. */
export function lateFailure(e: unknown): LateOutcome {
  return certainlyNotApplied(e) ? "notApplied" : "unknown";
}

function lateApplied(): LateOutcome {
  return "applied";
}

/**
 * Sends a write whose caller gives up at `deadline` without aborting the
 * write then: the caller gets the deadline's reason at once, while the
 * write runs to its end for up to `graceMs` more; the scope's
 * {@linkcode LateSink} learns how it ended (the library gives a charge
 * that applied late back, see `acquire/late_charge.ts`). Aborting a write
 * in flight is what made the SDK's default HTTP handler under Deno apply it
 * twice (a double charge; a double give-back would over-admit), see
 * `tests/integration/aborted_writes_test.ts`.
 */
function sendWrite(
  send: Send,
  command: unknown,
  deadline: AbortSignal,
  graceMs: number,
  state: WriteState | null,
): Promise<unknown> {
  if (state) state.deadline = deadline;
  const sink = lateScope.getStore();
  const inner = new AbortController();
  let grace: Deadline | null = null;
  let sent: Promise<unknown> | null = null;
  return new Promise((resolve, reject) => {
    // One listener per write: answer the caller, and give the write its grace.
    // With the guard's count: nothing on the wire and nothing that may have
    // applied means never applied (the guard sends no attempt after this).
    const onDeadline = (): void => {
      grace = scheduleDeadline(graceMs, () => inner.abort(deadline.reason));
      if (state && state.inFlight === 0 && !state.maybeApplied) {
        reject(new WriteNotSentError(deadline.reason));
        return;
      }
      // The late-outcome machinery exists only once the deadline fired.
      if (sink && sent) {
        sink(sent.then(lateApplied, lateFailure));
      }
      reject(deadline.reason);
    };
    deadline.addEventListener("abort", onDeadline, { once: true });
    sent = send(command, { abortSignal: inner.signal });
    const done = (): void => {
      deadline.removeEventListener("abort", onDeadline);
      if (grace !== null) cancelDeadline(grace);
    };
    sent.then((v) => {
      done();
      resolve(v);
    }, (e) => {
      done();
      reject(e);
    });
  });
}

function addWriteGuard(stack: MiddlewareStackLike, state: WriteState): void {
  let attempts = 0;
  let last: unknown = undefined;
  // finalizeRequest/low runs inside the SDK's retry middleware (finalizeRequest/high): once per attempt.
  stack.add((next) => async (args) => {
    if (attempts > 0 && !certainlyNotApplied(last)) {
      throw new AmbiguousWriteError(last);
    }
    // Its caller gave up: no new attempt (a retry nobody waits for would only strand tokens).
    if (state.deadline?.aborted) {
      throw new WriteNotSentError(state.deadline.reason);
    }
    attempts++;
    state.inFlight++;
    try {
      return await next(args);
    } catch (e) {
      last = e;
      if (!certainlyNotApplied(e)) state.maybeApplied = true;
      throw e;
    } finally {
      state.inFlight--;
    }
  }, { step: "finalizeRequest", priority: "low", name: "zaelWriteGuard" });
}

function addClockSample(
  stack: MiddlewareStackLike,
  options: TransportOptions,
): void {
  const sync = options.clockSync as ClockSync;
  const headerOf = (r: unknown): string | undefined => {
    const h = (r as { headers?: Record<string, string> } | undefined)?.headers;
    return h?.["date"] ?? h?.["Date"];
  };
  stack.add((next) => async (args) => {
    const sent = options.localClock.now();
    try {
      const out = await next(args);
      const date = headerOf((out as { response?: unknown }).response);
      if (date) sync.observe(sent, options.localClock.now(), date);
      return out;
    } catch (e) {
      const date = headerOf((e as { $response?: unknown }).$response);
      if (date) sync.observe(sent, options.localClock.now(), date);
      throw e;
    }
  }, { step: "deserialize", priority: "low", name: "zaelClockSample" });
}

/**
 * Runs `fn` under a fresh deadline of `ms`, detached from the enclosing
 * scope: clean-up (compensating a charge after the caller's deadline
 * passed) gets its own short grace instead of failing at once.
 */
export function withGrace<T>(
  ms: number,
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  return scope.exit(() => withDeadline({}, ms, fn));
}

/**
 * Runs `fn` with `signal` as its deadline scope in place of the enclosing
 * one (`undefined`: outside any scope): a write shared by several calls
 * (coalescing) lives until every one of them gave up, not until the first.
 */
export function withScope<T>(
  signal: AbortSignal | undefined,
  fn: () => Promise<T>,
): Promise<T> {
  return signal ? scope.run(signal, fn) : scope.exit(fn);
}

/**
 * `p`, or the abort reason of the enclosing deadline if it passes first: a
 * call that waits on work another call started (a shared config read) is
 * bounded by its own deadline, not the other's.
 */
export function untilAborted<T>(p: Promise<T>): Promise<T> {
  const signal = currentSignal();
  if (!signal) return p;
  if (signal.aborted) {
    // `p` is another call's work (it handles its failure); left unobserved
    // here, its rejection would end the process as unhandled.
    p.catch(() => {});
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() =>
      signal.removeEventListener("abort", onAbort)
    );
  });
}
