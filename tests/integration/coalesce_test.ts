/**
 * Coalescing (`core/acquire/coalescer.ts`) on DynamoDB Local: concurrent
 * acquires of one limiter on one hot key share writes, admit exactly what
 * the bucket holds, and each refused request gets its own statuses; strict
 * mode (`coalesceWrites: false`) writes every decision. The admission
 * oracle (`oracle_test.ts`) checks coalesced histories with faults.
 */
import assert from "node:assert/strict";
import { Limit, RateLimiter, RateLimitExceeded } from "../../mod.ts";
import { freshRepo } from "./_harness.ts";

const HOT = { entityId: "hot-key", resource: "api" };

async function burst(
  limiter: RateLimiter,
  amounts: readonly number[],
): Promise<PromiseSettledResult<number>[]> {
  return await Promise.allSettled(
    amounts.map((n) =>
      limiter.acquire({ ...HOT, consume: { rph: n } }, () => n)
    ),
  );
}

Deno.test("acquire() coalesces 32 concurrent acquires on one hot key into fewer writes and admits exactly what the bucket holds", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.perHour("rph", 20)]);
  const limiter = new RateLimiter(env.repo);
  await limiter.acquire({ ...HOT, consume: { rph: 1 } }, () => {}); // creates the bucket
  env.calls.reset();
  const out = await burst(limiter, Array(32).fill(1));
  const admitted = out.filter((o) => o.status === "fulfilled").length;
  // 19 left of 20 per hour: the burst takes under a second, less than a token refills.
  assert.equal(admitted, 19);
  for (const o of out) {
    if (o.status === "fulfilled") continue;
    assert.ok(o.reason instanceof RateLimitExceeded, String(o.reason));
    const [s] = o.reason.statuses;
    assert.equal(s?.requested, 1);
    assert.equal(s?.exceeded, true);
    assert.ok((s?.retryAfterSeconds ?? 0) > 0);
  }
  const writes = env.calls.counts.get("UpdateItemCommand") ?? 0;
  assert.ok(writes < 32, `${writes} writes for 32 decisions`);
});

Deno.test("acquire() in strict mode (coalesceWrites: false) writes every decision", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.perHour("rph", 1000)]);
  const limiter = new RateLimiter(env.repo, { coalesceWrites: false });
  await limiter.acquire({ ...HOT, consume: { rph: 1 } }, () => {});
  env.calls.reset();
  const out = await burst(limiter, Array(16).fill(1));
  assert.ok(out.every((o) => o.status === "fulfilled"));
  const writes = env.calls.counts.get("UpdateItemCommand") ?? 0;
  assert.ok(writes >= 16, `${writes} writes for 16 decisions`);
});

Deno.test("acquire() decides each request of a coalesced batch on its own: the ones that fit are admitted, each refusal carries its own request and Retry-After", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.perHour("rph", 10)]);
  const limiter = new RateLimiter(env.repo);
  const lease = await limiter.acquire({ ...HOT, consume: { rph: 1 } });
  await lease.commit();
  // 9 left; the first request of the burst is written alone, the rest queue.
  const asks = [1, 6, 3, 5, 2, 4];
  const out = await burst(limiter, asks);
  let taken = 0;
  out.forEach((o, i) => {
    const ask = asks[i] as number;
    if (o.status === "fulfilled") {
      taken += ask;
      return;
    }
    assert.ok(o.reason instanceof RateLimitExceeded, String(o.reason));
    const [s] = o.reason.statuses;
    assert.equal(s?.requested, ask);
    assert.equal(s?.exceeded, true);
    // Refused on its own: it did not fit what was left (never a half charge).
    assert.ok((s?.available ?? 99) < ask, JSON.stringify(s));
    assert.ok((s?.retryAfterSeconds ?? 0) > 0);
  });
  assert.ok(taken <= 9, `admitted ${taken} of 9`);
  const left = await limiter.available(HOT);
  assert.equal(left.rph, 9 - taken);
  // Nothing refused would have fitted what is left (a token takes 6 minutes).
  out.forEach((o, i) => {
    if (o.status === "rejected") {
      assert.ok((asks[i] as number) > 9 - taken, `refused ${asks[i]}`);
    }
  });
});
