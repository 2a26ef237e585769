/**
 * Concurrency (in-flight) limits on DynamoDB Local under the real clock:
 * never more than `max` unexpired holders (parallel acquires from several
 * limiters), slots freed on commit and rollback, a crashed holder's slot
 * free after `leaseMs`, all or nothing with several rate limits and the
 * cascade parent, the DynamoDB calls it adds, and the stored format (the
 * bucket items unchanged; the slot item a NEW item type without GSI keys).
 */
import assert from "node:assert/strict";
import { setTimeout as delay } from "node:timers/promises";
import { GetItemCommand } from "@aws-sdk/client-dynamodb";
import {
  type Lease,
  Limit,
  RateLimiter,
  RateLimitExceeded,
  Repository,
} from "../../mod.ts";
import { freshRepo } from "./_harness.ts";
import { rawBucket } from "./_stored.ts";

const RATE = [
  new Limit("rpm", 1000, 1, 86_400),
  new Limit("tpm", 100_000, 1, 86_400),
];

async function slotItem(
  env: Awaited<ReturnType<typeof freshRepo>>,
  entityId: string,
  resource: string,
  name: string,
) {
  const ns = /^(.*)\/BUCKET#/.exec(env.repo.bucketPk(entityId, resource))?.[1];
  const out = await env.client.send(
    new GetItemCommand({
      TableName: env.repo.tableName,
      Key: {
        PK: { S: `${ns}/CONCURRENCY#${entityId}#${resource}` },
        SK: { S: `#SLOTS#${name}` },
      },
      ConsistentRead: true,
    }),
  );
  return out.Item;
}

function liveSlots(
  item: Record<string, { N?: string }> | undefined,
  now = Date.now(),
): number {
  return Object.entries(item ?? {}).filter(([k, v]) =>
    /^cs_\d+$/.test(k) && Number(v.N) > now
  ).length;
}

Deno.test("acquire() with a concurrency limit admits exactly max of many parallel acquires from several limiters", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults(RATE);
  const limiters = await Promise.all([0, 1, 2].map(async () =>
    new RateLimiter(
      await Repository.open({ client: env.client, stack: env.repo.tableName }),
    )
  ));
  const inflight = Limit.concurrent("inflight", 3, { leaseMs: 30_000 });
  const call = {
    entityId: "key1",
    resource: "gpt",
    consume: { rpm: 1, tpm: 100 },
    concurrency: [inflight],
  };
  const results = await Promise.allSettled(
    Array.from(
      { length: 12 },
      (_, i) => (limiters[i % 3] as RateLimiter).acquire(call),
    ),
  );
  const held = results.flatMap((r) =>
    r.status === "fulfilled" ? [r.value] : []
  );
  for (const r of results) {
    if (r.status === "rejected") {
      assert.ok(r.reason instanceof RateLimitExceeded, String(r.reason));
      assert.equal(r.reason.violations[0]?.limitName, "inflight");
    }
  }
  assert.equal(held.length, 3);
  const item = await slotItem(env, "key1", "gpt", "inflight");
  assert.equal(liveSlots(item), 3);
  assert.equal(item?.["max"]?.N, "3");
  // No GSI key: the reference's index queries never see the slot item.
  assert.ok(!Object.keys(item ?? {}).some((k) => k.startsWith("GSI")));
  // Refused acquires charged nothing: 3 requests on the rate limits.
  assert.deepEqual(
    await (limiters[0] as RateLimiter).available({
      entityId: "key1",
      resource: "gpt",
    }),
    { rpm: 997, tpm: 99_700 },
  );
  // Commit and rollback both free the slots.
  await (held[0] as Lease).commit();
  await (held[1] as Lease).rollback();
  await (held[2] as Lease).commit();
  assert.equal(liveSlots(await slotItem(env, "key1", "gpt", "inflight")), 0);
  assert.deepEqual(
    await (limiters[0] as RateLimiter).available({
      entityId: "key1",
      resource: "gpt",
    }),
    { rpm: 998, tpm: 99_800 },
  );
});

Deno.test("acquire() with a concurrency limit gets a crashed holder's slot back after leaseMs (real clock)", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults(RATE);
  const crashedProcess = new RateLimiter(env.repo);
  const other = new RateLimiter(
    await Repository.open({ client: env.client, stack: env.repo.tableName }),
  );
  const call = {
    entityId: "key1",
    resource: "gpt",
    consume: { rpm: 1 },
    concurrency: [Limit.concurrent("inflight", 2, { leaseMs: 400 })],
  };
  const a = await crashedProcess.acquire(call);
  await crashedProcess.acquire(call); // never ended
  await assert.rejects(other.acquire(call), (e: unknown) => {
    assert.ok(e instanceof RateLimitExceeded);
    assert.ok(e.retryAfterSeconds > 0 && e.retryAfterSeconds <= 0.4);
    return true;
  });
  await delay(500);
  const b = await other.acquire(call);
  const c = await other.acquire(call);
  await assert.rejects(other.acquire(call), { name: "RateLimitExceeded" });
  // The crashed holder comes back late: refused, and it cannot free the new holders' slots.
  await assert.rejects(a.commit(), { name: "LeaseDeadlineExceeded" });
  await a.rollback();
  assert.equal(liveSlots(await slotItem(env, "key1", "gpt", "inflight")), 2);
  await b.commit();
  await c.commit();
  assert.equal(liveSlots(await slotItem(env, "key1", "gpt", "inflight")), 0);
});

Deno.test("acquire() with a concurrency limit is all or nothing with several rate limits and the cascade parent", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults(RATE);
  await env.repo.createEntity("org");
  await env.repo.createEntity("key1", { parentId: "org", cascade: true });
  await env.repo.createEntity("key2", { parentId: "org", cascade: true });
  await env.repo.setLimits("org", [
    new Limit("rpm", 1000, 1, 86_400),
    new Limit("tpm", 1000, 1, 86_400),
  ]);
  const limiter = new RateLimiter(env.repo);
  const inflight = [
    Limit.concurrent("inflight", 5, { leaseMs: 60_000 }),
    Limit.concurrent("streams", 1, { leaseMs: 60_000 }),
  ];
  const call = (entityId: string, tpm: number) => ({
    entityId,
    resource: "gpt",
    consume: { rpm: 1, tpm },
    concurrency: inflight,
  });
  const a = await limiter.acquire(call("key2", 900));
  // The parent's tpm refuses: key1's slots are freed, nothing charged on key1.
  await assert.rejects(limiter.acquire(call("key1", 200)), (e: unknown) => {
    assert.ok(e instanceof RateLimitExceeded);
    assert.deepEqual(e.violations.map((v) => [v.entityId, v.limitName]), [[
      "org",
      "tpm",
    ]]);
    return true;
  });
  for (const name of ["inflight", "streams"]) {
    assert.equal(liveSlots(await slotItem(env, "key1", "gpt", name)), 0);
  }
  // The second concurrency limit (streams: 1) refuses: the first one's slot is freed.
  const b = await limiter.acquire(call("key1", 10));
  await assert.rejects(limiter.acquire(call("key1", 10)), (e: unknown) => {
    assert.ok(e instanceof RateLimitExceeded);
    assert.equal(e.violations[0]?.limitName, "streams");
    return true;
  });
  assert.equal(liveSlots(await slotItem(env, "key1", "gpt", "inflight")), 1);
  // A rollback gives back the rate tokens on both levels and frees both slots.
  await b.rollback();
  await a.rollback();
  for (const name of ["inflight", "streams"]) {
    assert.equal(liveSlots(await slotItem(env, "key1", "gpt", name)), 0);
  }
  assert.deepEqual(
    await limiter.available({ entityId: "org", resource: "gpt" }),
    { rpm: 1000, tpm: 1000 },
  );
  // The bucket item carries only the 0.10 attributes (no slot data).
  const bucket = await rawBucket(env.client, env.repo, "key1", "gpt");
  assert.ok(bucket);
  assert.ok(
    Object.keys(bucket).every((k) => !/^c[sh]_/.test(k) && k !== "max"),
    Object.keys(bucket).join(","),
  );
});

Deno.test("acquire() with one concurrency limit sends 2 writes when warm, and its lease end 1 more", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults(RATE);
  const limiter = new RateLimiter(env.repo);
  const call = {
    entityId: "key1",
    resource: "gpt",
    consume: { rpm: 1 },
    concurrency: [Limit.concurrent("inflight", 5, { leaseMs: 60_000 })],
  };
  await limiter.acquire(call, () => {});
  await limiter.acquire(call, () => {});
  for (let i = 0; i < 3; i++) {
    env.calls.reset();
    const lease = await limiter.acquire(call);
    assert.deepEqual(Object.fromEntries(env.calls.counts), {
      UpdateItemCommand: 2,
    });
    env.calls.reset();
    await lease.commit();
    assert.deepEqual(Object.fromEntries(env.calls.counts), {
      UpdateItemCommand: 1,
    });
  }
  // Without concurrency limits: still exactly 1.
  env.calls.reset();
  await limiter.acquire({ ...call, concurrency: [] }, () => {});
  assert.deepEqual(Object.fromEntries(env.calls.counts), {
    UpdateItemCommand: 1,
  });
});
