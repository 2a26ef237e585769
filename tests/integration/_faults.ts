/**
 * Fault injection for the integration tests: a real AWS SDK v3
 * `DynamoDBClient` on DynamoDB Local whose attempts can be made to fail
 * before or after DynamoDB applies them, be delayed or hang; a TCP black hole
 * to point clients at; and a clock running off the real one by a fixed offset.
 *
 * ## Where the injector sits (and why it sees every attempt)
 *
 * The SDK's `retryMiddleware` sits at step `finalizeRequest`, priority
 * `high`; it calls the rest of the stack once per attempt. The injector is
 * added at step `deserialize`, priority `low`: the innermost middleware, just
 * above the HTTP handler and below the SDK's `deserializerMiddleware` and
 * `httpSigningMiddleware`. With this SDK (client-dynamodb 3.1164.0, smithy
 * core 3.41.0) the stack reads, outermost first:
 * `loggerMiddleware, serializerMiddleware, contentLengthMiddleware,
 * getUserAgentMiddleware, hostHeaderMiddleware, recursionDetectionMiddleware,
 * retryMiddleware, httpSigningMiddleware, deserializerMiddleware,
 * zaelFaultInjector`.
 * Verified by experiment (and by `faults_harness_test.ts`): a command whose
 * first two attempts fail with a retryable error passes through the injector
 * three times, with `amz-sdk-request: attempt=1; max=3`, `attempt=2`,
 * `attempt=3` set by the retry middleware on each pass, and the result carries
 * `$metadata.attempts === 3`; the `initialize`-step counter sees the command
 * once.
 *
 * Being below the deserializer, an injected service error is an HTTP response
 * (status, `x-amzn-requestid`, JSON `__type` body) that the SDK's own
 * deserializer turns into the genuine exception class
 * (`InternalServerError`, `ProvisionedThroughputExceededException`, ...) with
 * the real `$fault` and `$metadata`; the SDK's retry classification then
 * treats it exactly like the real thing. Network errors are thrown as the
 * Node HTTP handler throws them.
 *
 * ## What the SDK does with each fault (observed, standard retry mode)
 *
 * - `InternalServerError`: HTTP 500, `$fault: "server"`, no `$retryable`;
 *   retried because 500 is a transient status (base backoff 50 ms, jittered,
 *   doubling).
 * - `ThrottlingException`, `ProvisionedThroughputExceededException`,
 *   `RequestLimitExceeded`: HTTP 400, `$fault: "client"`; retried as
 *   throttling, with a 1000 ms jittered, doubling backoff (two retries
 *   waited 0.3 to 2.2 s in total; two transient retries 15 to 60 ms).
 * - `TransactionConflictException`, `TransactionCanceledException`: HTTP 400,
 *   not retried by the SDK (one attempt).
 * - `ECONNRESET`: `Error { name: "TimeoutError", code: "ECONNRESET",
 *   message: "socket hang up" }` (what a server closing the socket produces);
 *   transient, retried.
 * - `ETIMEDOUT`: `Error { name: "TimeoutError", code: "ETIMEDOUT" }` with the
 *   handler's requestTimeout message; transient, retried.
 * - An aborted call: `Error { name: "AbortError", message: "Request aborted" }`;
 *   never retried.
 *
 * Every retry spends the client's retry quota (500 tokens; 14 per transient
 * retry, 5 per throttling retry, refunded on success): a client that keeps
 * failing stops retrying after about 35 transient retries. Use one client per
 * test.
 *
 * @module
 */
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { type Clock, sleep } from "../../core/clock.ts";
import { endpoint as localEndpoint } from "./_harness.ts";
import { seededRandom } from "../../dev/_seeded_random.ts";

/** Service errors an injection can answer with (the SDK builds the real exception). */
export type ServiceFault =
  | "InternalServerError"
  | "ThrottlingException"
  | "ProvisionedThroughputExceededException"
  | "RequestLimitExceeded"
  | "TransactionConflictException"
  | "TransactionCanceledException";

/** Network failures an injection can throw (as the Node HTTP handler throws them). */
export type NetworkFault = "ECONNRESET" | "ETIMEDOUT";

/** Any error an injection can produce. */
export type InjectedError = ServiceFault | NetworkFault;

/** What to do to a matching attempt. */
export type Fault =
  | {
    /** Do not send the request; fail the attempt with `error`. */
    readonly kind: "beforeApply";
    readonly error: InjectedError;
    /**
     * `CancellationReasons` codes of a `TransactionCanceledException`.
     * @default `TransactionConflict` for the first item, `None` for the others
     */
    readonly cancellationReasons?: readonly string[];
  }
  | {
    /** Send the request (DynamoDB applies it), discard the answer, fail with `error`. */
    readonly kind: "afterApply";
    readonly error: InjectedError;
  }
  | {
    /** Hold the request before sending it (`"request"`) or its answer (`"response"`, the default) for `ms`. */
    readonly kind: "delay";
    readonly ms: number;
    readonly phase?: "request" | "response";
  }
  | {
    /** Never answer until aborted (or the client's requestTimeout, or dispose); `phase` as for delay. */
    readonly kind: "hang";
    readonly phase?: "request" | "response";
  };

/** The attempt an injection rule is asked about. */
export interface AttemptInfo {
  /** Operation name without the `Command` suffix, e.g. `"UpdateItem"`. */
  readonly command: string;
  /** The SDK's attempt number for this command, from 1. */
  readonly attempt: number;
}

/** When and how to inject a fault. */
export interface FaultRule {
  /** Operation names (`"UpdateItem"` or `"UpdateItemCommand"`); every command when absent. */
  readonly command?: string | readonly string[];
  /** Only attempts whose command input (SDK shape, e.g. `Key: { pk: { S: "a" } }`) passes. */
  readonly match?: (
    input: Record<string, unknown>,
    attempt: AttemptInfo,
  ) => boolean;
  /** Chance that a matching attempt is hit, drawn from the client's seeded RNG. @default 1 */
  readonly probability?: number;
  /** Stop after this many injections ("the next N matching attempts"). @default Infinity */
  readonly times?: number;
  /** The fault to inject. */
  readonly fault: Fault;
}

/** A rule once injected. */
export interface InjectedRule {
  /** The rule. */
  readonly rule: FaultRule;
  /** How many attempts it has hit. */
  readonly fired: number;
  /** Injections left (`Infinity` when unbounded). */
  readonly remaining: number;
  /** Stops the rule. */
  remove(): void;
}

/** One injection, updated as the attempt proceeds. */
export interface FaultRecord {
  /** 1, 2, ... in injection order. */
  readonly seq: number;
  /** Operation name, e.g. `"UpdateItem"`. */
  readonly command: string;
  /** The SDK's attempt number for the command, from 1. */
  readonly attempt: number;
  /** The fault kind. */
  readonly kind: Fault["kind"];
  /** The injected error (beforeApply, afterApply). */
  readonly error?: InjectedError;
  /** `Date.now()` when the injection started. */
  readonly at: number;
  /** `Date.now()` when the attempt left the injector (absent while hanging). */
  endedAt?: number;
  /** Whether the request reached DynamoDB. */
  sent: boolean;
  /** Whether DynamoDB accepted it (answered 2xx): a write took effect. */
  applied: boolean;
  /** DynamoDB's real HTTP status, when sent. */
  status?: number;
  /**
   * How the attempt ended: `failed` (the injected error), `delivered` (the real
   * answer, late), `aborted` (the caller's signal), `timedOut` (the client's
   * requestTimeout), `released` (client disposed), `sendFailed` (the real
   * request failed on its own), `pending` (still held).
   */
  outcome:
    | "pending"
    | "failed"
    | "delivered"
    | "aborted"
    | "timedOut"
    | "released"
    | "sendFailed";
}

/** The fault plan of one client. */
export interface Faults {
  /** Adds a rule; rules are tried in the order added, the first that hits wins. */
  inject(rule: FaultRule): InjectedRule;
  /** Removes every rule (the log stays). */
  clear(): void;
  /** Every injection so far. */
  readonly log: readonly FaultRecord[];
  /** Ends every held attempt (delay, hang) with an `AbortError`. */
  releaseAll(): void;
}

/** Commands sent (once per `client.send`) and attempts made (once per try), by operation name. */
export interface Calls {
  /** `client.send` calls per operation. */
  readonly commands: Map<string, number>;
  /** Attempts per operation (retries included). */
  readonly attempts: Map<string, number>;
  /** Sum over `commands`. */
  totalCommands(): number;
  /** Sum over `attempts`. */
  totalAttempts(): number;
  /** Forgets everything. */
  reset(): void;
}

/** Options for {@linkcode faultyClient}. */
export interface FaultyClientOptions {
  /** @default the harness's DynamoDB Local */
  readonly endpoint?: string;
  /** Attempts per command, first included (the SDK's own default for DynamoDB is 4 here). @default 3 */
  readonly maxAttempts?: number;
  /**
   * Per-attempt limit in ms until the answer's headers. Passed to the HTTP
   * handler with `throwOnRequestTimeout: true` (without it the handler only
   * logs a warning and keeps waiting); an injected delay or hang honours it
   * too. The SDK retries the resulting `TimeoutError` (code `ETIMEDOUT`).
   * @default none
   */
  readonly requestTimeout?: number;
  /** Seed of the RNG that draws `probability`. @default 1 */
  readonly seed?: number;
}

/** A client with a fault plan; dispose to release held attempts and destroy the client. */
export interface FaultyClient extends Disposable {
  /** The client. */
  readonly client: DynamoDBClient;
  /** Its fault plan and log. */
  readonly faults: Faults;
  /** Its command and attempt counts. */
  readonly calls: Calls;
}

/** Operation name without the SDK's `Command` suffix. */
function operation(name: unknown): string {
  const s = String(name ?? "unknown");
  return s.endsWith("Command") ? s.slice(0, -"Command".length) : s;
}

const SERVICE_ERRORS: Record<
  ServiceFault,
  { status: number; type: string; message: string }
> = {
  InternalServerError: {
    status: 500,
    type: "com.amazonaws.dynamodb.v20120810#InternalServerError",
    message: "Internal server error",
  },
  ThrottlingException: {
    status: 400,
    type: "com.amazon.coral.availability#ThrottlingException",
    message: "Rate of requests exceeds the allowed throughput.",
  },
  ProvisionedThroughputExceededException: {
    status: 400,
    type:
      "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
    message:
      "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API.",
  },
  RequestLimitExceeded: {
    status: 400,
    type: "com.amazonaws.dynamodb.v20120810#RequestLimitExceeded",
    message:
      "Throughput exceeds the current throughput limit for your account.",
  },
  TransactionConflictException: {
    status: 400,
    type: "com.amazonaws.dynamodb.v20120810#TransactionConflictException",
    message: "Transaction is ongoing for the item",
  },
  TransactionCanceledException: {
    status: 400,
    type: "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
    message: "Transaction cancelled, please refer cancellation reasons",
  },
};

/** The raw HTTP answer the SDK's deserializer sees (duck-typed `HttpResponse`). */
interface RawResponse {
  statusCode: number;
  reason?: string;
  headers: Record<string, string>;
  body?: unknown;
}

function errorResponse(
  error: ServiceFault,
  seq: number,
  input: Record<string, unknown>,
  reasons: readonly string[] | undefined,
): RawResponse {
  const spec = SERVICE_ERRORS[error];
  const payload: Record<string, unknown> = {
    __type: spec.type,
    message: spec.message,
  };
  if (error === "TransactionCanceledException") {
    const n = Array.isArray(input.TransactItems)
      ? input.TransactItems.length
      : 1;
    const codes = reasons ??
      Array.from(
        { length: Math.max(n, 1) },
        (_, i) => i === 0 ? "TransactionConflict" : "None",
      );
    payload.message = `${spec.message} [${codes.join(", ")}]`;
    payload.CancellationReasons = codes.map((Code) =>
      Code === "None" ? { Code } : {
        Code,
        Message: Code === "TransactionConflict"
          ? "Transaction is ongoing for the item"
          : Code,
      }
    );
  }
  const body = new TextEncoder().encode(JSON.stringify(payload));
  return {
    statusCode: spec.status,
    reason: spec.status === 500 ? "Internal Server Error" : "Bad Request",
    headers: {
      "content-type": "application/x-amz-json-1.0",
      "content-length": String(body.length),
      "x-amzn-requestid": `zael-fault-${seq}`,
    },
    body,
  };
}

/** A network error as `@smithy/node-http-handler` surfaces it. */
function networkError(
  error: NetworkFault,
  requestTimeout: number | undefined,
): Error {
  return error === "ECONNRESET"
    ? Object.assign(new Error("socket hang up"), {
      name: "TimeoutError",
      code: "ECONNRESET",
    })
    : requestTimeoutError(requestTimeout ?? 0);
}

function requestTimeoutError(ms: number): Error {
  return Object.assign(
    new Error(
      `@smithy/node-http-handler - [ERROR] a request has exceeded the configured ${ms} ms requestTimeout.`,
    ),
    { name: "TimeoutError", code: "ETIMEDOUT" },
  );
}

/** The error the Node HTTP handler rejects with when the caller's signal aborts. */
function abortError(signal: AbortSignal | undefined, released = false): Error {
  if (released) {
    return Object.assign(
      new Error("Request aborted: fault injection released (client disposed)"),
      { name: "AbortError" },
    );
  }
  const reason: unknown = signal?.reason;
  const e = new Error(
    reason && !(reason instanceof Error) ? String(reason) : "Request aborted",
  );
  e.name = "AbortError";
  if (reason instanceof Error) e.cause = reason;
  return e;
}

function isServiceFault(e: InjectedError): e is ServiceFault {
  return e in SERVICE_ERRORS;
}

/** Reads a response body completely (a Node stream, a web stream or bytes). */
async function drain(body: unknown): Promise<Uint8Array> {
  if (body instanceof Uint8Array) return body;
  if (typeof body === "string") return new TextEncoder().encode(body);
  if (
    body && typeof body === "object" && Symbol.asyncIterator in body
  ) {
    const chunks: Uint8Array[] = [];
    for await (
      const chunk of body as AsyncIterable<Uint8Array | string>
    ) {
      chunks.push(
        typeof chunk === "string" ? new TextEncoder().encode(chunk) : chunk,
      );
    }
    const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
  return new Uint8Array();
}

/** Why a hold ended early. */
type HoldEnd = "aborted" | "timedOut" | "released";

/**
 * Waits `ms` (Infinity: forever), or until the caller's signal aborts, the
 * deadline passes or the plan is released; clears its timers and listeners.
 */
function hold(
  ms: number,
  signal: AbortSignal | undefined,
  deadline: number | undefined,
  release: AbortSignal,
): Promise<HoldEnd | null> {
  return new Promise((resolve) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const done = (end: HoldEnd | null): void => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      release.removeEventListener("abort", onRelease);
      resolve(end);
    };
    const onAbort = (): void => done("aborted");
    const onRelease = (): void => done("released");
    if (signal?.aborted) return done("aborted");
    if (release.aborted) return done("released");
    signal?.addEventListener("abort", onAbort, { once: true });
    release.addEventListener("abort", onRelease, { once: true });
    const untilDeadline = deadline === undefined
      ? Infinity
      : Math.max(0, deadline - Date.now());
    if (untilDeadline < ms) {
      timer = setTimeout(() => done("timedOut"), untilDeadline);
    } else if (Number.isFinite(ms)) {
      timer = setTimeout(() => done(null), ms);
    }
  });
}

interface RuleState {
  readonly rule: FaultRule;
  readonly commands: ReadonlySet<string> | null;
  fired: number;
  removed: boolean;
}

/**
 * A `DynamoDBClient` on DynamoDB Local (region us-east-1, dummy credentials)
 * whose attempts pass through a programmable fault injector; see the module
 * documentation for where it sits and what the SDK does with each fault.
 */
export async function faultyClient(
  options: FaultyClientOptions = {},
): Promise<FaultyClient> {
  const requestTimeout = options.requestTimeout;
  const client = new DynamoDBClient({
    endpoint: options.endpoint ?? await localEndpoint(),
    region: "us-east-1",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
    maxAttempts: options.maxAttempts ?? 3,
    ...(requestTimeout === undefined
      ? {}
      : { requestHandler: { requestTimeout, throwOnRequestTimeout: true } }),
  });
  const random = seededRandom(options.seed ?? 1);
  const rules: RuleState[] = [];
  const log: FaultRecord[] = [];
  let release = new AbortController();
  const commands = new Map<string, number>();
  const attempts = new Map<string, number>();
  const bump = (m: Map<string, number>, k: string): void => {
    m.set(k, (m.get(k) ?? 0) + 1);
  };

  const pick = (
    input: Record<string, unknown>,
    info: AttemptInfo,
  ): RuleState | null => {
    for (const s of rules) {
      if (s.removed || s.fired >= (s.rule.times ?? Infinity)) continue;
      if (s.commands && !s.commands.has(info.command)) continue;
      if (s.rule.match && !s.rule.match(input, info)) continue;
      const p = s.rule.probability ?? 1;
      if (p < 1 && random() >= p) continue;
      s.fired++;
      return s;
    }
    return null;
  };

  // Once per client.send.
  client.middlewareStack.add(
    (next, context) => (args) => {
      bump(commands, operation(context.commandName));
      return next(args);
    },
    { step: "initialize", name: "zaelFaultCommandCounter" },
  );

  // Once per attempt: innermost, inside the retry loop (see the module doc).
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const command = operation(context.commandName);
      bump(attempts, command);
      const request = args.request as
        | { headers?: Record<string, string> }
        | undefined;
      const attempt = Number(
        /attempt=(\d+)/.exec(request?.headers?.["amz-sdk-request"] ?? "")
          ?.[1] ?? 1,
      );
      const input = (args.input ?? {}) as Record<string, unknown>;
      const state = pick(input, { command, attempt });
      if (!state) return next(args);

      const fault = state.rule.fault;
      // The caller's `client.send(cmd, { abortSignal })` is not on `args`:
      // the HTTP handler gets it as a handler option, and middleware finds it
      // in `context.__smithy_context.abortSignal` (where the retry middleware
      // reads it too; checked: present on every attempt when passed).
      const signal = (context as {
        __smithy_context?: { abortSignal?: AbortSignal };
      }).__smithy_context?.abortSignal;
      const started = Date.now();
      const deadline = requestTimeout === undefined
        ? undefined
        : started + requestTimeout;
      const record: FaultRecord = {
        seq: log.length + 1,
        command,
        attempt,
        kind: fault.kind,
        ...("error" in fault ? { error: fault.error } : {}),
        at: started,
        sent: false,
        applied: false,
        outcome: "pending",
      };
      log.push(record);
      const finish = (outcome: FaultRecord["outcome"]): void => {
        record.outcome = outcome;
        record.endedAt = Date.now();
      };
      const sendForReal = async (): Promise<RawResponse> => {
        let raw: RawResponse;
        try {
          raw = (await next(args)).response as RawResponse;
        } catch (e) {
          finish(signal?.aborted ? "aborted" : "sendFailed");
          throw e;
        }
        record.sent = true;
        record.status = raw.statusCode;
        record.applied = raw.statusCode >= 200 && raw.statusCode < 300;
        // Buffered, so a held answer keeps no socket busy.
        return { ...raw, body: await drain(raw.body) };
      };
      const failWith = (error: InjectedError) => {
        finish("failed");
        if (!isServiceFault(error)) throw networkError(error, requestTimeout);
        const reasons = fault.kind === "beforeApply"
          ? fault.cancellationReasons
          : undefined;
        return {
          response: errorResponse(error, record.seq, input, reasons),
          output: undefined as never,
        };
      };
      const endHold = (end: HoldEnd): never => {
        finish(end);
        if (end === "timedOut") {
          throw requestTimeoutError(requestTimeout ?? 0);
        }
        throw abortError(signal, end === "released");
      };

      switch (fault.kind) {
        case "beforeApply":
          return failWith(fault.error);
        case "afterApply": {
          await sendForReal();
          return failWith(fault.error);
        }
        case "delay":
        case "hang": {
          const ms = fault.kind === "delay" ? fault.ms : Infinity;
          if (fault.phase === "request") {
            const end = await hold(ms, signal, deadline, release.signal);
            if (end) return endHold(end);
            const response = await sendForReal();
            finish("delivered");
            return { response, output: undefined as never };
          }
          const response = await sendForReal();
          const end = await hold(ms, signal, deadline, release.signal);
          if (end) return endHold(end);
          finish("delivered");
          return { response, output: undefined as never };
        }
      }
    },
    { step: "deserialize", priority: "low", name: "zaelFaultInjector" },
  );

  const faults: Faults = {
    inject(rule: FaultRule): InjectedRule {
      const names = rule.command === undefined ? null : new Set(
        (typeof rule.command === "string" ? [rule.command] : rule.command)
          .map(operation),
      );
      const s: RuleState = { rule, commands: names, fired: 0, removed: false };
      rules.push(s);
      return {
        rule,
        get fired() {
          return s.fired;
        },
        get remaining() {
          return s.removed
            ? 0
            : Math.max(0, (rule.times ?? Infinity) - s.fired);
        },
        remove() {
          s.removed = true;
        },
      };
    },
    clear() {
      for (const s of rules) s.removed = true;
      rules.length = 0;
    },
    log,
    releaseAll() {
      release.abort();
      release = new AbortController();
    },
  };
  const calls: Calls = {
    commands,
    attempts,
    totalCommands: () => [...commands.values()].reduce((a, b) => a + b, 0),
    totalAttempts: () => [...attempts.values()].reduce((a, b) => a + b, 0),
    reset() {
      commands.clear();
      attempts.clear();
    },
  };
  return {
    client,
    faults,
    calls,
    [Symbol.dispose]() {
      faults.releaseAll();
      client.destroy();
    },
  };
}

/** A TCP black hole: accepts connections and never answers. */
export interface SilentEndpoint extends AsyncDisposable {
  /** `http://127.0.0.1:<port>` */
  readonly endpoint: string;
  /** The loopback port it listens on. */
  readonly port: number;
  /** Connections accepted so far. */
  readonly connections: number;
  /**
   * Stops listening, then closes every accepted connection (so callers still
   * waiting see `ECONNRESET` and their retries `ECONNREFUSED`). Safe to call twice.
   */
  close(): Promise<void>;
}

/**
 * A server on a free loopback port that accepts TCP connections and never
 * writes a byte: a request sent there waits until the caller gives up.
 *
 * Observed with the SDK (no `requestTimeout`, no signal): the call waits
 * indefinitely, since this SDK sets no default socket timeout (the 300 s one
 * is opt-in through `AWS_ENABLE_DEFAULT_SOCKET_TIMEOUT_2026=true`), and
 * `client.destroy()` does not end it. Closing only the accepted connections
 * fails the attempt with `TimeoutError`/`ECONNRESET`, which the SDK retries
 * on a new connection that hangs again; it ends only once the listener is
 * closed (then `ECONNRESET`/`ECONNREFUSED` after `maxAttempts`). With
 * `requestTimeout: t` and `throwOnRequestTimeout` each attempt fails after
 * t ms with `TimeoutError`/`ETIMEDOUT` and is retried (3 attempts of 300 ms:
 * about 950 ms); without `throwOnRequestTimeout` the handler only logs a
 * warning. With `client.send(cmd, { abortSignal })` the call rejects with
 * `AbortError` a few ms after the abort.
 */
export function silentEndpoint(): SilentEndpoint {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const open = new Set<Deno.Conn>();
  let accepted = 0;
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        accepted++;
        open.add(conn);
      }
    } catch {
      // the listener was closed
    }
  })();
  let closing: Promise<void> | null = null;
  const close = (): Promise<void> =>
    closing ??= (async () => {
      try {
        listener.close();
      } catch {
        // already closed
      }
      await accepting;
      for (const conn of open) {
        try {
          conn.close();
        } catch {
          // already closed
        }
      }
      open.clear();
    })();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    get connections() {
      return accepted;
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** A {@linkcode Clock} on the real clock shifted by `offsetMs`; change `offsetMs` to make it jump. */
export function skewedClock(offsetMs: number): Clock & { offsetMs: number } {
  const clock = {
    offsetMs,
    now(): number {
      return Date.now() + clock.offsetMs;
    },
    sleep(ms: number, signal?: AbortSignal): Promise<void> {
      return sleep(ms, signal);
    },
  };
  return clock;
}
