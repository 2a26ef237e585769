import assert from "node:assert/strict";
import fc from "fast-check";
import { VirtualClock } from "../../tests/_fakes/virtual_clock.ts";
import {
  RateLimitExceeded,
  RequestExceedsCapacity,
  ValidationError,
} from "../errors.ts";
import { Limit } from "../limit.ts";
import type { LimitStatus } from "../models.ts";
import {
  JITTER_FRACTION,
  MIN_JITTER_MS,
  MIN_WAIT_MS,
  refusalWait,
  RELEASE_POLL_SECONDS,
  resolveWait,
  waitDelayMs,
  waitForCapacity,
} from "./wait.ts";

function refusal(
  retryAfterSeconds: number,
  limitName = "rpm",
): RateLimitExceeded {
  const s: LimitStatus = {
    entityId: "e",
    resource: "r",
    limitName,
    limit: Limit.perMinute("rpm", 1),
    available: 0,
    requested: 1,
    exceeded: true,
    retryAfterSeconds,
  };
  return new RateLimitExceeded([s]);
}

Deno.test("resolveWait() accepts maxMs >= 0 and names the bad field", () => {
  assert.deepEqual(resolveWait({ maxMs: 0 }), { maxMs: 0 });
  assert.deepEqual(resolveWait({ maxMs: 250.5 }), { maxMs: 250.5 });
  for (
    const [w, field] of [
      [null, "wait"],
      [5, "wait"],
      [{}, "wait.maxMs"],
      [{ maxMs: -1 }, "wait.maxMs"],
      [{ maxMs: NaN }, "wait.maxMs"],
      [{ maxMs: Infinity }, "wait.maxMs"],
      [{ maxMs: "1" }, "wait.maxMs"],
    ] as [unknown, string][]
  ) {
    assert.throws(
      () => resolveWait(w),
      (e: unknown) =>
        e instanceof ValidationError && e.field === field &&
        e.code === "VALIDATION_FAILED",
    );
  }
});

Deno.test("waitDelayMs() is the Retry-After plus a bounded jitter", () => {
  fc.assert(
    fc.property(
      fc.double({ min: 0, max: 120, noNaN: true }),
      fc.double({ min: 0, max: 0.999999, noNaN: true }),
      (ra, r) => {
        const d = waitDelayMs(ra, () => r);
        const base = Math.ceil(ra * 1000);
        const span = Math.max(MIN_JITTER_MS, base * JITTER_FRACTION);
        assert.ok(d >= Math.max(MIN_WAIT_MS, base), `${d} >= ${base}`);
        assert.ok(d <= Math.max(MIN_WAIT_MS, base + span), `${d}`);
        assert.ok(Number.isInteger(d));
      },
    ),
  );
});

Deno.test("waitForCapacity() sleeps each Retry-After and returns the admission", async () => {
  const clock = new VirtualClock();
  const t0 = clock.now();
  const tries: number[] = [];
  const p = waitForCapacity(() => {
    tries.push(clock.now() - t0);
    return tries.length < 3
      ? Promise.reject(refusal(0.5))
      : Promise.resolve("lease");
  }, { wait: { maxMs: 5000 }, clock, random: () => 0 });
  await clock.advance(2000);
  assert.equal(await p, "lease");
  assert.deepEqual(tries, [0, 500, 1000]);
});

Deno.test("waitForCapacity() throws the refusal at once when its Retry-After ends after maxMs", async () => {
  const clock = new VirtualClock();
  let n = 0;
  const e = refusal(3);
  const p = waitForCapacity(() => {
    n++;
    return Promise.reject(e);
  }, { wait: { maxMs: 2000 }, clock, random: () => 0.5 });
  await assert.rejects(p, (x: unknown) => x === e);
  assert.equal(n, 1);
  assert.equal(clock.pendingTimers, 0);
});

Deno.test("waitForCapacity() stops at maxMs with the last refusal", async () => {
  const clock = new VirtualClock();
  let n = 0;
  const p = waitForCapacity(() => {
    n++;
    return Promise.reject(refusal(0.3));
  }, { wait: { maxMs: 1000 }, clock, random: () => 0.99 });
  const settled = p.then(() => "ok", (e) => e);
  await clock.advance(1500);
  const e = await settled;
  assert.ok(e instanceof RateLimitExceeded);
  assert.ok(n >= 2 && n <= 4, `${n} tries`);
  assert.equal(clock.pendingTimers, 0);
});

Deno.test("waitForCapacity() with maxMs 0 tries once", async () => {
  const clock = new VirtualClock();
  let n = 0;
  await assert.rejects(
    waitForCapacity(() => {
      n++;
      return Promise.reject(refusal(0));
    }, { wait: { maxMs: 0 }, clock, random: () => 0 }),
    RateLimitExceeded,
  );
  assert.equal(n, 1);
});

Deno.test("waitForCapacity() never waits for a request that can never fit, nor on other errors", async () => {
  const clock = new VirtualClock();
  for (
    const err of [new RequestExceedsCapacity([]), new Error("unavailable")]
  ) {
    let n = 0;
    await assert.rejects(
      waitForCapacity(() => {
        n++;
        return Promise.reject(err);
      }, { wait: { maxMs: 60_000 }, clock, random: () => 0 }),
      (x: unknown) => x === err,
    );
    assert.equal(n, 1);
  }
});

Deno.test("waitForCapacity() rejects with the signal's reason when cancelled mid-wait", async () => {
  const clock = new VirtualClock();
  const ac = new AbortController();
  let n = 0;
  const p = waitForCapacity(() => {
    n++;
    return Promise.reject(refusal(10));
  }, { wait: { maxMs: 60_000 }, clock, random: () => 0, signal: ac.signal });
  const settled = p.then(() => "ok", (e) => e);
  await clock.advance(1000);
  const reason = new Error("client went away");
  ac.abort(reason);
  assert.equal(await settled, reason);
  assert.equal(n, 1);
  assert.equal(clock.pendingTimers, 0);
  // Already aborted: no try at all.
  await assert.rejects(
    waitForCapacity(() => {
      n++;
      return Promise.resolve("x");
    }, { wait: { maxMs: 10 }, clock, random: () => 0, signal: ac.signal }),
    (x: unknown) => x === reason,
  );
  assert.equal(n, 1);
});

Deno.test("refusalWait() polls a limit that may free up early and waits out the others", () => {
  const released = new Set(["inflight"]);
  const both = new RateLimitExceeded([
    ...refusal(30, "inflight").statuses,
    ...refusal(0.4, "rpm").statuses,
  ]);
  assert.deepEqual(refusalWait(both, 1000, released), {
    seconds: 0.4,
    hopeless: false,
  });
  assert.deepEqual(refusalWait(refusal(30, "inflight"), 1000, released), {
    seconds: RELEASE_POLL_SECONDS,
    hopeless: false,
  });
  // Without the hint, a Retry-After past maxMs ends the wait at once.
  assert.equal(refusalWait(refusal(30, "inflight"), 1000).hopeless, true);
  assert.equal(refusalWait(refusal(2, "rpm"), 1000, released).hopeless, true);
});

Deno.test("waitForCapacity() polls a released limit until a slot comes back, within maxMs", async () => {
  const clock = new VirtualClock();
  const t0 = clock.now();
  const tries: number[] = [];
  const p = waitForCapacity(() => {
    tries.push(clock.now() - t0);
    // The holder ends its lease at 350 ms, long before its 60 s deadline.
    return clock.now() - t0 >= 350
      ? Promise.resolve("lease")
      : Promise.reject(refusal(60, "inflight"));
  }, {
    wait: { maxMs: 2000 },
    clock,
    random: () => 0,
    released: new Set(["inflight"]),
  });
  await clock.advance(1000);
  assert.equal(await p, "lease");
  assert.deepEqual(tries, [0, 100, 200, 300, 400]);
});
