import assert from "node:assert/strict";
import { systemClock } from "./clock.ts";
import {
  beforeSend,
  certainlyNotApplied,
  DeadlineExceededError,
  guardedSend,
  type LateOutcome,
  type Send,
  untilAborted,
  watchLate,
  withDeadline,
  withScope,
  WriteNotSentError,
} from "./transport.ts";

/** Commands named as the SDK's are (the transport tells writes by the class name). */
class UpdateItemCommand {}
class GetItemCommand {}

/** A send that never answers until released or aborted, recording its signal. */
function hangingSend(): {
  send: Send;
  signals: AbortSignal[];
  release: (value: unknown) => void;
} {
  const signals: AbortSignal[] = [];
  const releases: ((v: unknown) => void)[] = [];
  const send: Send = (_command, options) =>
    new Promise((resolve, reject) => {
      const signal = options?.abortSignal as AbortSignal;
      signals.push(signal);
      releases.push(resolve);
      signal.addEventListener("abort", () => reject(signal.reason), {
        once: true,
      });
    });
  return {
    send,
    signals,
    release: (v) => {
      for (const r of releases) r(v);
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** guardedSend with a 1 s default deadline on the system clock. */
const guarded = (send: Send, writeGraceMs?: number): Send =>
  guardedSend(send, {
    defaultTimeoutMs: 1000,
    localClock: systemClock,
    ...(writeGraceMs === undefined ? {} : { writeGraceMs }),
  });

Deno.test("guardedSend: a write in flight is not aborted at its caller's deadline; the caller is answered at once", async () => {
  const h = hangingSend();
  const send = guarded(h.send, 5_000);
  const t0 = performance.now();
  await assert.rejects(
    withDeadline({}, 30, () => send(new UpdateItemCommand())),
    DeadlineExceededError,
  );
  const took = performance.now() - t0;
  assert.ok(took < 1000, `the caller waited ${took} ms past a 30 ms deadline`);
  await sleep(50);
  assert.equal(h.signals.length, 1);
  assert.equal(
    h.signals[0]?.aborted,
    false,
    "the write was aborted in flight",
  );
  h.release({ ok: true }); // finishes in the background, no unhandled rejection
  await sleep(10);
});

Deno.test("guardedSend: a write still hanging after the grace is aborted", async () => {
  const h = hangingSend();
  const send = guarded(h.send, 40);
  await assert.rejects(
    withDeadline({}, 20, () => send(new UpdateItemCommand())),
    DeadlineExceededError,
  );
  await sleep(150);
  assert.equal(h.signals[0]?.aborted, true, "the grace never ended the write");
  assert.ok(h.signals[0]?.reason instanceof DeadlineExceededError);
});

Deno.test("guardedSend: a read is aborted at the deadline", async () => {
  const h = hangingSend();
  const send = guarded(h.send, 5_000);
  await assert.rejects(
    withDeadline({}, 20, () => send(new GetItemCommand())),
    DeadlineExceededError,
  );
  assert.equal(h.signals[0]?.aborted, true);
});

Deno.test("guardedSend: a write answered before the deadline returns its answer", async () => {
  const send = guarded(() => Promise.resolve({ n: 1 }));
  assert.deepEqual(
    await withDeadline({}, 500, () => send(new UpdateItemCommand())),
    { n: 1 },
  );
  assert.deepEqual(await send(new UpdateItemCommand()), { n: 1 });
});

Deno.test("guardedSend: a write failing before the deadline fails with its own error", async () => {
  const boom = new Error("ValidationException");
  const send = guarded(() => Promise.reject(boom));
  await assert.rejects(
    withDeadline({}, 500, () => send(new UpdateItemCommand())),
    (e) => e === boom,
  );
});

type Mw = (
  next: (a: unknown) => Promise<unknown>,
) => (a: unknown) => Promise<unknown>;

/**
 * A write command with a middleware stack, sent by a fake SDK: attempts run
 * through the stack's middlewares (where the library's guard sits), and a
 * throttled attempt is retried after `backoffMs`, as the SDK's retry loop does.
 */
function sdkLike(
  handler: (attempt: number, signal: AbortSignal) => Promise<unknown>,
  backoffMs: number,
): { send: Send; command: () => object; attempts: () => number } {
  let attempts = 0;
  class UpdateItemCommand {
    readonly mws: Mw[] = [];
    readonly middlewareStack = { add: (mw: Mw) => void this.mws.push(mw) };
  }
  const send: Send = async (command, options) => {
    const c = command as UpdateItemCommand;
    const signal = options?.abortSignal as AbortSignal;
    const run = c.mws.reduceRight<(a: unknown) => Promise<unknown>>(
      (next, mw) => mw(next),
      () => handler(attempts++, signal),
    );
    for (let i = 0;; i++) {
      try {
        return await run({});
      } catch (e) {
        if (i >= 2 || (e as Error).name !== "ThrottlingException") throw e;
        await new Promise((r) => setTimeout(r, backoffMs));
      }
    }
  };
  return {
    send,
    command: () => new UpdateItemCommand(),
    attempts: () => attempts,
  };
}

function throttled(): Error {
  const e = new Error("Rate of requests exceeds the allowed throughput.");
  e.name = "ThrottlingException";
  return e;
}

Deno.test("guardedSend: a write waiting out a throttle when its deadline passes is never applied: not sent again, and the caller told so", async () => {
  const sdk = sdkLike(
    (n) => n === 0 ? Promise.reject(throttled()) : Promise.resolve({}),
    120,
  );
  const send = guarded(sdk.send);
  let caught: unknown;
  await withDeadline({}, 30, () => send(sdk.command())).catch((e) =>
    caught = e
  );
  assert.ok(caught instanceof WriteNotSentError, `got ${String(caught)}`);
  assert.ok(certainlyNotApplied(caught));
  await sleep(250); // the SDK's backoff ends: its retry must not be sent
  assert.equal(
    sdk.attempts(),
    1,
    "the SDK retried a write whose caller gave up",
  );
});

Deno.test("guardedSend: a write on the wire when its deadline passes may have applied: the caller gets the deadline's reason", async () => {
  let finish: (v: unknown) => void = () => {};
  const sdk = sdkLike(() => new Promise((r) => finish = r), 10);
  const send = guarded(sdk.send);
  let caught: unknown;
  await withDeadline({}, 30, () => send(sdk.command())).catch((e) =>
    caught = e
  );
  assert.ok(caught instanceof DeadlineExceededError, `got ${String(caught)}`);
  assert.equal(certainlyNotApplied(caught), false);
  finish({});
  await sleep(10);
});

/**
 * Sends one write under a 30 ms deadline in a late-outcome scope, the
 * attempt answering `answer` after `answerMs`: what the caller got, and the
 * late outcome the scope learned (`null`: none).
 */
async function lateRun(
  answer: (signal: AbortSignal) => Promise<unknown>,
  answerMs: number,
  writeGraceMs = 5_000,
): Promise<{ caught: unknown; late: LateOutcome | null; sinks: number }> {
  const sdk = sdkLike(
    (_, signal) =>
      new Promise((r) => setTimeout(r, answerMs)).then(() => answer(signal)),
    10,
  );
  const send = guarded(sdk.send, writeGraceMs);
  let late: Promise<LateOutcome> | null = null;
  let sinks = 0;
  let caught: unknown;
  await withDeadline(
    {},
    30,
    () =>
      watchLate((p) => {
        sinks++;
        late = p;
      }, () => send(sdk.command())),
  ).catch((e) => {
    // The sink learned the outcome's promise before the caller was answered.
    assert.ok(late !== null || e instanceof WriteNotSentError);
    caught = e;
  });
  return { caught, late: late === null ? null : await late, sinks };
}

Deno.test("guardedSend: a write that applies after its caller's deadline reports 'applied' to its late-outcome scope", async () => {
  const r = await lateRun(() => Promise.resolve({}), 120);
  assert.ok(
    r.caught instanceof DeadlineExceededError,
    `got ${String(r.caught)}`,
  );
  assert.equal(r.late, "applied");
  assert.equal(r.sinks, 1);
});

Deno.test("guardedSend: a write that fails before applying after its caller's deadline reports 'notApplied'", async () => {
  const failed = new Error("The conditional request failed");
  failed.name = "ConditionalCheckFailedException";
  const r = await lateRun(() => Promise.reject(failed), 120);
  assert.ok(r.caught instanceof DeadlineExceededError);
  assert.equal(r.late, "notApplied");
});

Deno.test("guardedSend: a late write that fails ambiguously, or outlives its grace, reports 'unknown'", async () => {
  const reset = Object.assign(new Error("socket hang up"), {
    name: "TimeoutError",
    code: "ECONNRESET",
  });
  const r = await lateRun(() => Promise.reject(reset), 120);
  assert.equal(r.late, "unknown");
  // An answer that never comes: the grace (60 ms) aborts the write.
  const hung = await lateRun(
    (signal) =>
      new Promise((_, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason))
      ),
    0,
    60,
  );
  assert.equal(hung.late, "unknown");
});

Deno.test("guardedSend: no late outcome for a write answered in time, nor for one never sent", async () => {
  const r = await lateRun(() => Promise.resolve({}), 0);
  assert.equal(r.caught, undefined);
  assert.equal(r.sinks, 0);
  // Throttled, then the deadline passes in the backoff: certainly not applied, no late outcome.
  const sdk = sdkLike(() => Promise.reject(throttled()), 120);
  let sinks = 0;
  let caught: unknown;
  await withDeadline(
    {},
    30,
    () => watchLate(() => sinks++, () => guarded(sdk.send)(sdk.command())),
  ).catch(
    (e) => caught = e,
  );
  assert.ok(caught instanceof WriteNotSentError);
  assert.equal(sinks, 0);
});

Deno.test("beforeSend() turns a failure before the send into a certainly-not-applied WriteNotSentError (its cause kept)", async () => {
  const reason = new DeadlineExceededError(30);
  const e = await beforeSend(() => Promise.reject(reason)).catch((x) => x);
  assert.ok(e instanceof WriteNotSentError);
  assert.equal(e.cause, reason);
  assert.ok(certainlyNotApplied(e));
  assert.match(e.message, /failed before its write was sent/);
  const sent = new WriteNotSentError(reason);
  assert.equal(
    await beforeSend(() => Promise.reject(sent)).catch((x) => x),
    sent,
  );
  assert.equal(await beforeSend(() => 7), 7);
});

Deno.test("untilAborted() on a passed deadline leaves no unhandled rejection when the shared work fails afterwards", async () => {
  // A config read another call started: this call's deadline passed first,
  // then the read fails with the other call's deadline. The failure is the
  // other call's to handle; an unhandled rejection here ended the whole
  // process (the 30-minute soak at 6f9c7cc, after 11 minutes).
  let fail!: (e: unknown) => void;
  const shared = new Promise<never>((_, reject) => (fail = reject));
  const ac = new AbortController();
  ac.abort(new DeadlineExceededError(50));
  await assert.rejects(
    withScope(ac.signal, () => untilAborted(shared)),
    DeadlineExceededError,
  );
  fail(new DeadlineExceededError(868));
  // Deno's test runner fails the test on a rejection nobody handled.
  await new Promise((r) => setTimeout(r, 20));
});
