import assert from "node:assert/strict";
import { systemClock } from "./clock.ts";
import {
  certainlyNotApplied,
  DeadlineExceededError,
  guardedSend,
  type Send,
  withDeadline,
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
