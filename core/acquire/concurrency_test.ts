import assert from "node:assert/strict";
import { Limit } from "../limit.ts";
import { createTestLimiter, MemorySlotStore } from "../../testing.ts";
import { validateConcurrency } from "./concurrency.ts";

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

function setup() {
  const clock = manual();
  const slots = new MemorySlotStore();
  const t = createTestLimiter({
    source: { clock },
    limiter: { slotStore: slots },
  });
  t.source.setSystemDefaults([Limit.perMinute("rpm", 100)]);
  return { ...t, clock, slots };
}

const INFLIGHT = Limit.concurrent("inflight", 2, { leaseMs: 10_000 });
const CALL = {
  entityId: "k",
  resource: "api",
  consume: { rpm: 1 },
  concurrency: [INFLIGHT],
};
const REF = { ns: "default", entityId: "k", resource: "api", name: "inflight" };

function held(t: ReturnType<typeof setup>, entityId = "k"): number {
  const now = t.clock.now();
  return [...t.slots.slots({ ...REF, entityId }).values()].filter((s) =>
    s.expiry > now
  ).length;
}

Deno.test("Limit.concurrent() validates max and leaseMs", () => {
  assert.throws(() => Limit.concurrent("c", 0, { leaseMs: 1 }), {
    name: "ValidationError",
  });
  assert.throws(() => Limit.concurrent("c", 501, { leaseMs: 1 }), {
    name: "ValidationError",
  });
  assert.throws(() => Limit.concurrent("c", 1, { leaseMs: 0 }), {
    name: "ValidationError",
  });
  assert.throws(() => Limit.concurrent("c", 1, { leaseMs: 86_400_001 }), {
    name: "ValidationError",
  });
  assert.throws(() => validateConcurrency([Limit.perMinute("rpm", 1)]), {
    name: "ValidationError",
  });
  assert.throws(() => validateConcurrency([INFLIGHT, INFLIGHT]), {
    name: "ValidationError",
  });
});

Deno.test("acquire() with a concurrency limit admits at most max holders and frees a slot on commit and rollback", async () => {
  const t = setup();
  const a = await t.limiter.acquire(CALL);
  const b = await t.limiter.acquire(CALL);
  assert.equal(held(t), 2);
  assert.equal(a.deadline, t.clock.now() + 10_000);
  const err = await t.limiter.acquire(CALL).catch((e) => e);
  assert.equal(err.code, "RATE_LIMIT_EXCEEDED");
  assert.equal(err.violations[0].limitName, "inflight");
  assert.ok(err.retryAfterSeconds > 9 && err.retryAfterSeconds <= 10);
  // The refusal charged no rate limit: 2 taken.
  const left = await t.limiter.available({ entityId: "k", resource: "api" });
  assert.equal(left.rpm, 98);
  await a.commit();
  assert.equal(held(t), 1);
  const c = await t.limiter.acquire(CALL);
  await b.rollback();
  await c.rollback();
  assert.equal(held(t), 0);
  assert.equal(
    (await t.limiter.available({ entityId: "k", resource: "api" })).rpm,
    99,
  );
});

Deno.test("acquire() with a concurrency limit gets a crashed holder's slot back after leaseMs; the late holder cannot commit nor free it", async () => {
  const t = setup();
  const crashed = await t.limiter.acquire(CALL);
  await t.limiter.acquire(CALL); // also never ends
  await assert.rejects(t.limiter.acquire(CALL), { name: "RateLimitExceeded" });
  t.clock.advance(9_999);
  await assert.rejects(t.limiter.acquire(CALL), { name: "RateLimitExceeded" });
  t.clock.advance(1);
  const fresh = await t.limiter.acquire(CALL);
  await t.limiter.acquire(CALL);
  await assert.rejects(t.limiter.acquire(CALL), { name: "RateLimitExceeded" });
  await assert.rejects(crashed.commit(), { name: "LeaseDeadlineExceeded" });
  await crashed.rollback(); // no-op: the new holders keep their slots
  assert.equal(held(t), 2);
  await fresh.commit();
  assert.equal(held(t), 1);
});

Deno.test("acquire() with a concurrency limit frees the slot when a rate limit refuses (all or nothing)", async () => {
  const t = setup();
  t.source.setSystemDefaults([Limit.perMinute("rpm", 1)]);
  await t.limiter.acquire(CALL, () => {});
  await assert.rejects(
    t.limiter.acquire(CALL),
    (e: Error & { code: string; violations: { limitName: string }[] }) => {
      assert.equal(e.code, "RATE_LIMIT_EXCEEDED");
      assert.equal(e.violations[0]?.limitName, "rpm");
      return true;
    },
  );
  assert.equal(held(t), 0);
  // Cascade: the parent's rate limit refuses; the child's slot is freed too.
  t.source.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  t.source.setLimits("org", [Limit.perMinute("rpm", 1)], "api");
  t.source.createEntity("org");
  t.source.createEntity("c1", { parentId: "org", cascade: true });
  t.source.createEntity("c2", { parentId: "org", cascade: true });
  await t.limiter.acquire({ ...CALL, entityId: "c2" }, () => {}); // org's 1 rpm
  await assert.rejects(
    t.limiter.acquire({ ...CALL, entityId: "c1" }),
    { name: "RateLimitExceeded" },
  );
  assert.equal(held(t, "c1"), 0);
  assert.equal(held(t, "c2"), 0);
});

Deno.test("acquire() with maxHoldMs shorter than leaseMs: the lease ends first; the slot stays held until leaseMs", async () => {
  const t = setup();
  const a = await t.limiter.acquire({ ...CALL, maxHoldMs: 1000 });
  assert.equal(a.deadline, t.clock.now() + 1000);
  t.clock.advance(1000);
  await assert.rejects(a.commit(), { name: "LeaseDeadlineExceeded" });
  assert.equal(held(t), 1);
});
