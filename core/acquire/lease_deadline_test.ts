import assert from "node:assert/strict";
import { Limit } from "../limit.ts";
import { createTestLimiter } from "../../testing.ts";
import { holdDeadline, validateMaxHold } from "./lease_deadline.ts";

function manual(start = 1_900_000_000_000) {
  let now = start;
  return {
    now: () => now,
    sleep: () => Promise.resolve(),
    advance(ms: number) {
      now += ms;
    },
  };
}

function setup(maxHoldMs?: number) {
  const clock = manual();
  const t = createTestLimiter({
    source: { clock },
    limiter: maxHoldMs === undefined ? {} : { maxHoldMs },
  });
  t.source.setSystemDefaults([
    Limit.perMinute("rpm", 100),
    Limit.perMinute("tpm", 10_000),
  ]);
  return { ...t, clock };
}

async function tokens(
  t: ReturnType<typeof setup>,
  entityId: string,
): Promise<Record<string, number>> {
  return await t.limiter.available({ entityId, resource: "api" });
}

Deno.test("validateMaxHold() accepts positive milliseconds and refuses the rest", () => {
  assert.equal(validateMaxHold(undefined), undefined);
  assert.equal(validateMaxHold(250), 250);
  for (const bad of [0, -1, Infinity, NaN, "5"]) {
    assert.throws(() => validateMaxHold(bad), {
      name: "ValidationError",
      code: "VALIDATION_FAILED",
    });
  }
});

Deno.test("holdDeadline() takes the shortest of maxHoldMs and a concurrency lease", () => {
  assert.equal(holdDeadline(1000, undefined), null);
  assert.equal(holdDeadline(1000, 500), 1500);
  assert.equal(holdDeadline(1000, 500, 200), 1200);
  assert.equal(holdDeadline(1000, undefined, 200), 1200);
});

Deno.test("Lease refuses adjust, consume and commit with LeaseDeadlineExceeded after maxHoldMs, and keeps the estimate charged", async () => {
  const t = setup();
  const lease = await t.limiter.acquire({
    entityId: "k",
    resource: "api",
    consume: { rpm: 1, tpm: 500 },
    maxHoldMs: 1000,
  });
  assert.equal(lease.deadline, t.clock.now() + 1000);
  lease.adjust({ tpm: -400 }); // before the deadline: accepted, not yet written
  t.clock.advance(999);
  assert.equal(lease.state, "open");
  t.clock.advance(1);
  assert.equal(lease.state, "expired");
  const refused = {
    name: "LeaseDeadlineExceeded",
    code: "LEASE_DEADLINE_EXCEEDED",
  };
  assert.throws(() => lease.adjust({ tpm: 10 }), refused);
  assert.throws(() => lease.release({ tpm: 10 }), refused);
  await assert.rejects(lease.consume({ tpm: 10 }), refused);
  await assert.rejects(lease.commit(), refused);
  // Rollback after the deadline is a no-op: nothing is given back.
  await lease.rollback();
  assert.equal(lease.state, "expired");
  // The 500 estimate stays charged, the -400 is dropped. A new bucket
  // refills from the end of its holdback (1% of the capacity: 600 ms), so
  // the 1 s refilled 400 ms worth, 66.67.
  assert.equal((await tokens(t, "k")).tpm, 10_000 - 500 + 66);
});

Deno.test("Lease before its deadline commits and rolls back as usual", async () => {
  const t = setup(5000);
  const a = await t.limiter.acquire({
    entityId: "k",
    resource: "api",
    consume: { tpm: 500 },
  });
  assert.equal(a.deadline, t.clock.now() + 5000);
  a.adjust({ tpm: -300 });
  t.clock.advance(4999);
  await a.commit();
  assert.equal(a.state, "committed");
  const b = await t.limiter.acquire({
    entityId: "k2",
    resource: "api",
    consume: { tpm: 500 },
    maxHoldMs: 100, // the call's own deadline wins over the limiter's
  });
  assert.equal(b.deadline, t.clock.now() + 100);
  await b.rollback();
  assert.equal(b.state, "rolled_back");
  assert.equal((await tokens(t, "k2")).tpm, 10_000);
});

Deno.test("acquire() with a callback throws LeaseDeadlineExceeded when the body outlives maxHoldMs; the estimate stays charged", async () => {
  const t = setup();
  await assert.rejects(
    t.limiter.acquire({
      entityId: "k",
      resource: "api",
      consume: { tpm: 600 },
      maxHoldMs: 50,
    }, (lease) => {
      lease.adjust({ tpm: -500 });
      t.clock.advance(50);
      return "late";
    }),
    { name: "LeaseDeadlineExceeded", code: "LEASE_DEADLINE_EXCEEDED" },
  );
  // 600 charged, the -500 dropped; nothing refilled within the new
  // bucket's 600 ms holdback.
  assert.equal((await tokens(t, "k")).tpm, 10_000 - 600);
  // A body that throws after the deadline: its error surfaces, nothing given back.
  await assert.rejects(
    t.limiter.acquire({
      entityId: "k3",
      resource: "api",
      consume: { tpm: 600 },
      maxHoldMs: 50,
    }, () => {
      t.clock.advance(60);
      throw new Error("boom");
    }),
    { message: "boom" },
  );
  assert.equal((await tokens(t, "k3")).tpm, 10_000 - 600); // within the holdback
});

Deno.test("RateLimiter refuses a bad maxHoldMs before any write", async () => {
  assert.throws(() => setup(-5), { name: "ValidationError" });
  const t = setup();
  await assert.rejects(
    t.limiter.acquire({
      entityId: "k",
      resource: "api",
      consume: { tpm: 1 },
      maxHoldMs: 0,
    }),
    { name: "ValidationError", code: "VALIDATION_FAILED" },
  );
  assert.equal((await tokens(t, "k")).tpm, 10_000);
});
