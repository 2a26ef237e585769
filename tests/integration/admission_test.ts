/**
 * The admission findings of issue "Admission you can trust", each reproduced
 * on DynamoDB Local with the real clock (shifted where a test needs a bucket
 * that has been idle for a minute), several clients with their own caches,
 * and concurrency. Every test asserts against what the ideal token bucket
 * allows.
 */
import assert from "node:assert/strict";
import { UpdateItemCommand } from "@aws-sdk/client-dynamodb";
import {
  type Clock,
  type Lease,
  Limit,
  RateLimiter,
  RateLimitExceeded,
  Repository,
  RequestExceedsCapacity,
} from "../../mod.ts";
import { sleep } from "../../core/clock.ts";
import { freshRepo, localClient } from "./_harness.ts";
import { num, rawBucket } from "./_stored.ts";

/** The real clock shifted by an offset that a test can change (the clock keeps running). */
function shiftedClock(offsetMs = 0): Clock & { shift(ms: number): void } {
  let off = offsetMs;
  return {
    now: () => Date.now() + off,
    sleep: (ms: number, signal?: AbortSignal) => sleep(ms, signal),
    shift(ms: number) {
      off = ms;
    },
  };
}

/** Another client of the same table: its own SDK client, repository, caches and limiter. */
async function otherClient(
  repo: Repository,
  options: { clock?: Clock; clockSync?: boolean } = {},
): Promise<
  { repo: Repository; limiter: RateLimiter } & AsyncDisposable
> {
  const { client } = await localClient();
  const r = await Repository.open({
    client,
    stack: repo.tableName,
    namespace: repo.namespaceName,
    ...options,
  });
  return {
    repo: r,
    limiter: new RateLimiter(r, { onError: () => {} }),
    [Symbol.asyncDispose]() {
      client.destroy();
      return Promise.resolve();
    },
  };
}

async function outcome(p: Promise<unknown>): Promise<"ok" | "refused"> {
  try {
    await p;
    return "ok";
  } catch (e) {
    if (e instanceof RateLimitExceeded) return "refused";
    throw e;
  }
}

Deno.test("finding 1: a bucket idle for 61 s, then a burst of 120 from 4 clients, admits at most its capacity plus the refill during the burst", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 60)]);
  // The bucket was last written 61 s ago (a client whose clock reads 61 s back).
  const past = shiftedClock(-61_000);
  {
    await using old = await otherClient(env.repo, { clock: past });
    await old.limiter.acquire(
      { entityId: "k", resource: "api", consume: { rpm: 60 } },
      () => {},
    );
  }
  const clients = await Promise.all(
    Array.from({ length: 4 }, () => otherClient(env.repo)),
  );
  try {
    const started = Date.now();
    const results = await Promise.all(
      clients.flatMap((c) =>
        Array.from({ length: 30 }, () =>
          outcome(c.limiter.acquire(
            { entityId: "k", resource: "api", consume: { rpm: 1 } },
            () => {},
          )))
      ),
    );
    const seconds = (Date.now() - started) / 1000;
    const admitted = results.filter((r) => r === "ok").length;
    // Ideal: full (60) after 61 s idle, plus 1 token per second of burst.
    const ideal = 60 + Math.floor(seconds) + 1;
    assert.ok(
      admitted <= ideal,
      `admitted ${admitted} of 120, the ideal bucket allows at most ${ideal}`,
    );
    assert.ok(admitted >= 59, `admitted only ${admitted}: the bucket was full`);
  } finally {
    for (const c of clients) await c[Symbol.asyncDispose]();
  }
});

Deno.test("finding 2: giving back tokens never lifts a bucket above its capacity", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.custom("rp10s", 10, 10, 10)]);
  const clock = shiftedClock(-11_000);
  await using a = await otherClient(env.repo, { clock });
  // A lease holds all 10 tokens for 11 s, while refill tops the bucket up.
  const held = await a.limiter.acquire({
    entityId: "k",
    resource: "api",
    consume: { rp10s: 10 },
  });
  const rolled = await a.limiter.acquire({
    entityId: "k",
    resource: "api",
    consume: { rp10s: 0 },
  });
  clock.shift(0);
  held.adjust({ rp10s: -9 });
  await held.commit();
  await rolled.rollback();
  const raw = await rawBucket(env.client, env.repo, "k", "api");
  assert.ok(
    (num(raw, "b_rp10s_tk") ?? 0) <= 10_000,
    `tk ${num(raw, "b_rp10s_tk")} on a capacity of 10`,
  );
  // The bucket is full (10); 12 requests of 1 now admit at most 10 (+1 refilled meanwhile).
  await using b = await otherClient(env.repo);
  const results = await Promise.all(
    Array.from({ length: 12 }, () =>
      outcome(b.limiter.acquire(
        { entityId: "k", resource: "api", consume: { rp10s: 1 } },
        () => {},
      ))),
  );
  const admitted = results.filter((r) => r === "ok").length;
  assert.ok(admitted <= 11, `admitted ${admitted} of 12 on a capacity of 10`);
  // A request larger than the capacity is never admitted.
  await assert.rejects(
    b.limiter.acquire(
      { entityId: "k", resource: "api", consume: { rp10s: 15 } },
      () => {},
    ),
    RequestExceedsCapacity,
  );
});

Deno.test("finding 4: a capacity lowered by another writer (tk left above it) is enforced at once", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.perHour("rph", 100)]);
  await using a = await otherClient(env.repo);
  await a.limiter.acquire(
    { entityId: "k", resource: "api", consume: { rph: 1 } },
    () => {},
  );
  // The Python client's set_limits: cp rewritten (and the stored config),
  // tk (99) left above the new capacity (20).
  await env.repo.setSystemDefaults([Limit.perHour("rph", 20)]);
  await env.client.send(
    new UpdateItemCommand({
      TableName: env.repo.tableName,
      Key: {
        PK: { S: env.repo.bucketPk("k", "api") },
        SK: { S: "#STATE" },
      },
      UpdateExpression: "SET b_rph_cp = :cp, b_rph_ra = :cp",
      ExpressionAttributeValues: { ":cp": { N: "20000" } },
    }),
  );
  // Client `a` still caches capacity 100 for up to a minute.
  const results = await Promise.all(
    Array.from({ length: 30 }, () =>
      outcome(a.limiter.acquire(
        { entityId: "k", resource: "api", consume: { rph: 1 } },
        () => {},
      ))),
  );
  const admitted = results.filter((r) => r === "ok").length;
  assert.ok(admitted <= 20, `admitted ${admitted} on a capacity of 20`);
  const raw = await rawBucket(env.client, env.repo, "k", "api");
  assert.equal(num(raw, "b_rph_cp"), 20_000, "the stale cache wrote 100 back");
});

Deno.test("finding 4: a process with a stale config cache does not write its old limits over a newer change", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 50)]);
  await using stale = await otherClient(env.repo);
  await stale.limiter.acquire(
    { entityId: "k", resource: "api", consume: { rpm: 1 } },
    () => {},
  );
  // Another process lowers the limit and its own acquire stores it on the bucket.
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 5)]);
  await using fresh = await otherClient(env.repo);
  await fresh.limiter.acquire(
    { entityId: "k", resource: "api", consume: { rpm: 1 } },
    () => {},
  );
  assert.equal(
    num(await rawBucket(env.client, env.repo, "k", "api"), "b_rpm_cp"),
    5000,
  );
  let admitted = 0;
  for (let i = 0; i < 10; i++) {
    if (
      await outcome(stale.limiter.acquire(
        { entityId: "k", resource: "api", consume: { rpm: 1 } },
        () => {},
      )) === "ok"
    ) admitted++;
  }
  assert.equal(
    num(await rawBucket(env.client, env.repo, "k", "api"), "b_rpm_cp"),
    5000,
    "the stale process wrote its cached capacity back",
  );
  // 5 - 1 (fresh) - at most the one 'stale' took before the change, refill aside.
  assert.ok(admitted <= 4, `admitted ${admitted} on a capacity of 5`);
});

Deno.test("finding 7: a request larger than the capacity is refused as never satisfiable, without a write", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.perSecond("rps", 5)]);
  const limiter = new RateLimiter(env.repo);
  await limiter.acquire(
    { entityId: "k", resource: "api", consume: { rps: 1 } },
    () => {},
  );
  env.calls.reset();
  const err = await limiter.acquire(
    { entityId: "k", resource: "api", consume: { rps: 8 } },
    () => assert.fail("must not run"),
  ).then(() => null, (e) => e);
  assert.ok(err instanceof RequestExceedsCapacity, String(err));
  assert.equal(err.code, "REQUEST_EXCEEDS_CAPACITY");
  assert.equal(err.retryable, false);
  assert.match(err.message, /rps asks 8 but its capacity is 5/);
  assert.ok(!(err instanceof RateLimitExceeded), "no Retry-After to loop on");
  assert.equal(env.calls.total(), 0, "decided from the cached config");
});

Deno.test("finding 8: a client whose clock is 60 s ahead is corrected by the server's Date and cannot admit a second bucket", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  const ahead = shiftedClock(60_000);
  await using fast = await otherClient(env.repo, {
    clock: ahead,
    clockSync: true,
  });
  await using honest = await otherClient(env.repo);
  const bounds = fast.repo.clockOffsetBounds;
  assert.ok(bounds !== null);
  assert.ok(
    bounds[1] <= -58_000 && bounds[0] >= -62_500,
    `offset bounds ${bounds}`,
  );
  // The honest client drains the bucket.
  let admitted = 0;
  for (let i = 0; i < 10; i++) {
    if (
      await outcome(honest.limiter.acquire(
        { entityId: "k", resource: "api", consume: { rpm: 1 } },
        () => {},
      )) === "ok"
    ) admitted++;
  }
  assert.equal(admitted, 10);
  // The skewed client would see 60 s of refill; corrected, it sees about none.
  for (let i = 0; i < 10; i++) {
    if (
      await outcome(fast.limiter.acquire(
        { entityId: "k", resource: "api", consume: { rpm: 1 } },
        () => {},
      )) === "ok"
    ) admitted++;
  }
  assert.ok(admitted <= 12, `admitted ${admitted} in ~1 s on 10 per minute`);
  const rf = num(await rawBucket(env.client, env.repo, "k", "api"), "rf") ?? 0;
  assert.ok(
    rf <= Date.now() + 2_500,
    `rf is ${rf - Date.now()} ms in the future`,
  );
});

Deno.test("await using: a lease left without commit is rolled back, and the tokens are back", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.perHour("rph", 3)]);
  const limiter = new RateLimiter(env.repo);
  for (let i = 0; i < 3; i++) {
    await using lease: Lease = await limiter.acquire({
      entityId: "k",
      resource: "api",
      consume: { rph: 1 },
    });
    assert.equal(lease.state, "open");
  }
  // All three were given back: three more fit.
  for (let i = 0; i < 3; i++) {
    await limiter.acquire(
      { entityId: "k", resource: "api", consume: { rph: 1 } },
      () => {},
    );
  }
  await assert.rejects(
    limiter.acquire(
      { entityId: "k", resource: "api", consume: { rph: 1 } },
      () => {},
    ),
    RateLimitExceeded,
  );
});
