/**
 * Lease deadlines (`maxHoldMs`) on DynamoDB Local under the real clock:
 * after the deadline the lease refuses adjust, consume and commit, its
 * rollback gives nothing back, and the estimate charged on acquire stays
 * charged on the entity and its cascade parent, on every limit.
 */
import assert from "node:assert/strict";
import { setTimeout as delay } from "node:timers/promises";
import { Limit, RateLimiter } from "../../mod.ts";
import { freshRepo } from "./_harness.ts";

/** Limits that refill one token a day: the real clock moves them by nothing a test can see. */
const LIMITS = [
  new Limit("rpm", 100, 1, 86_400),
  new Limit("tpm", 10_000, 1, 86_400),
];
const REFUSED = {
  name: "LeaseDeadlineExceeded",
  code: "LEASE_DEADLINE_EXCEEDED",
};

async function setup() {
  const env = await freshRepo();
  await env.repo.setSystemDefaults(LIMITS);
  await env.repo.createEntity("org");
  await env.repo.createEntity("key1", { parentId: "org", cascade: true });
  return env;
}

Deno.test("Lease past maxHoldMs refuses adjust, consume and commit; the estimate stays charged on the entity and its cascade parent", async () => {
  await using env = await setup();
  const limiter = new RateLimiter(env.repo, { onError: () => {} });
  const lease = await limiter.acquire({
    entityId: "key1",
    resource: "gpt",
    consume: { rpm: 1, tpm: 2000 },
    maxHoldMs: 300,
  });
  assert.ok(lease.deadline !== null);
  lease.adjust({ tpm: -1500 }); // accepted before the deadline, never written
  await delay(450);
  assert.equal(lease.state, "expired");
  assert.throws(() => lease.adjust({ tpm: 1 }), REFUSED);
  await assert.rejects(lease.consume({ tpm: 1 }), REFUSED);
  await assert.rejects(lease.commit(), REFUSED);
  await lease.rollback(); // a no-op after the deadline
  assert.equal(lease.state, "expired");
  for (const entityId of ["key1", "org"]) {
    const left = await limiter.available({ entityId, resource: "gpt" });
    assert.deepEqual(left, { rpm: 99, tpm: 8000 }, entityId);
  }
});

Deno.test("Lease before maxHoldMs rolls back everything on both levels; the limiter-wide default applies", async () => {
  await using env = await setup();
  const limiter = new RateLimiter(env.repo, { maxHoldMs: 10_000 });
  const lease = await limiter.acquire({
    entityId: "key1",
    resource: "gpt",
    consume: { rpm: 1, tpm: 2000 },
  });
  assert.ok(lease.deadline !== null && lease.deadline > Date.now() + 5000);
  await lease.consume({ tpm: 500 });
  await lease.rollback();
  assert.equal(lease.state, "rolled_back");
  for (const entityId of ["key1", "org"]) {
    const left = await limiter.available({ entityId, resource: "gpt" });
    assert.deepEqual(left, { rpm: 100, tpm: 10_000 }, entityId);
  }
  // A committed lease with its adjustment written in time.
  await limiter.acquire({
    entityId: "key1",
    resource: "gpt",
    consume: { rpm: 1, tpm: 2000 },
    maxHoldMs: 5000,
  }, (l) => l.adjust({ tpm: -1500 }));
  assert.deepEqual(
    await limiter.available({ entityId: "org", resource: "gpt" }),
    { rpm: 99, tpm: 9500 },
  );
});

Deno.test("acquire() with a body that outlives maxHoldMs rejects with LeaseDeadlineExceeded and keeps the estimate", async () => {
  await using env = await setup();
  const limiter = new RateLimiter(env.repo);
  let bodyDone = false;
  await assert.rejects(
    limiter.acquire({
      entityId: "key1",
      resource: "gpt",
      consume: { rpm: 1, tpm: 3000 },
      maxHoldMs: 200,
    }, async (lease) => {
      await delay(350);
      bodyDone = true;
      assert.throws(() => lease.adjust({ tpm: -2000 }), REFUSED);
      return "too late";
    }),
    REFUSED,
  );
  assert.equal(bodyDone, true);
  assert.deepEqual(
    await limiter.available({ entityId: "key1", resource: "gpt" }),
    { rpm: 99, tpm: 7000 },
  );
});
