/**
 * The local reserve on DynamoDB Local with the real clock: several limiters
 * (separate SDK clients, repositories, caches and slices, like separate
 * processes) sharing buckets never over-admit (checked by the oracle on the
 * writes DynamoDB saw and on what callers saw); slices expire and are given
 * back; `close()` gives back; a slice write that fails after applying is
 * reported stranded and nothing is admitted from it; cascade and several
 * limits are served only when every limit is covered.
 */
import assert from "node:assert/strict";
import { DynamoBucketStore } from "../../core/store/dynamo_bucket_store.ts";
import { tableOf } from "../../core/store/table.ts";
import {
  Limit,
  RateLimiter,
  type RateLimiterOptions,
  Repository,
  type StrandedCharge,
} from "../../mod.ts";
import { check, format } from "../_oracle/checker.ts";
import { ReserveRecorder } from "../_oracle/reserve_recorder.ts";
import { faultyClient } from "./_faults.ts";
import { freshRepo, localClient } from "./_harness.ts";

const clients: { destroy(): void }[] = [];

async function openAs(repo: Repository): Promise<Repository> {
  const { client } = await localClient();
  clients.push(client);
  return await Repository.open({
    client,
    stack: repo.tableName,
    namespace: repo.namespaceName,
  });
}

function reserveLimiter(
  repo: Repository,
  options: RateLimiterOptions,
  recorder?: ReserveRecorder,
): RateLimiter {
  const store = new DynamoBucketStore(tableOf(repo));
  return new RateLimiter(repo, {
    refusalCacheSize: 0,
    onError: () => {},
    bucketStore: recorder ? recorder.wrap(store) : store,
    ...options,
  });
}

async function storedTk(
  repo: Repository,
  entityId: string,
  limit: string,
): Promise<{ tk: bigint; tc: bigint }> {
  const store = new DynamoBucketStore(tableOf(repo));
  const { items } = await store.read([
    { ns: repo.namespaceId, entityId, resource: "api", shard: 0 },
  ]);
  const st = items[0]?.limits.get(limit);
  assert.ok(st, `no item for ${entityId}`);
  return { tk: st.tk, tc: st.tc ?? 0n };
}

/**
 * Three limiters share a child (cascading to a parent) and a solo bucket
 * for 2.5 s; with `faults`, the third sends through a client that fails 4%
 * of its UpdateItems after DynamoDB applied them (the answer lost) and 4%
 * before. Both histories must pass the oracle.
 */
async function sharedHistory(faults: boolean): Promise<void> {
  await using t = await freshRepo();
  const capacity = 60;
  await t.repo.setSystemDefaults([Limit.custom("rpm", capacity, capacity, 1)]);
  await t.repo.createEntity("parent");
  await t.repo.createEntity("child", { parentId: "parent", cascade: true });
  const rec = new ReserveRecorder("rpm");
  const fc = faults ? await faultyClient({ maxAttempts: 3, seed: 11 }) : null;
  fc?.faults.inject({
    command: "UpdateItem",
    probability: 0.04,
    fault: { kind: "afterApply", error: "InternalServerError" },
  });
  fc?.faults.inject({
    command: "UpdateItem",
    probability: 0.04,
    fault: { kind: "beforeApply", error: "ThrottlingException" },
  });
  const third = fc
    ? await Repository.open({
      client: fc.client,
      stack: t.repo.tableName,
      namespace: t.repo.namespaceName,
    })
    : await openAs(t.repo);
  const repos = [t.repo, await openAs(t.repo), third];
  const limiters = repos.map((r, i) =>
    reserveLimiter(r, {
      timeoutMs: 10_000,
      onStranded: rec.onStranded(),
      localReserve: {
        ttlMs: 300,
        targetMs: 500,
        maxFraction: 0.25,
        env: {},
        onSlice: rec.onSlice(i),
      },
    }, rec)
  );
  // Buckets exist and are full before the history starts.
  const warm = new RateLimiter(t.repo);
  for (const entityId of ["child", "solo"]) {
    await warm.acquire(
      { entityId, resource: "api", consume: { rpm: 1 } },
      () => {},
    );
  }
  await new Promise((r) => setTimeout(r, 1100));
  const t0 = BigInt(Date.now());
  const end = Date.now() + 2500;
  let seed = 7;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  await Promise.all(
    limiters.flatMap((limiter, i) =>
      Array.from({ length: 4 }, async () => {
        while (Date.now() < end) {
          const cascade = random() < 0.5;
          await rec.acquire(i, limiter, {
            entityId: cascade ? "child" : "solo",
            resource: "api",
            amount: 1,
            buckets: cascade ? ["child", "parent"] : ["solo"],
            fails: random() < 0.1,
            more: random() < 0.05 ? 1 : 0,
          });
          await new Promise((r) => setTimeout(r, Math.floor(random() * 40)));
        }
      })
    ),
  );
  for (const l of limiters) await l.close();
  const tc = new Map<string, bigint>();
  for (const b of ["child", "parent", "solo"]) {
    tc.set(b, (await storedTk(t.repo, b, "rpm")).tc);
  }
  const params = {
    cp: BigInt(capacity) * 1000n,
    ra: BigInt(capacity) * 1000n,
    rp: 1000n,
  };
  const limits = ["child", "parent", "solo"].map((bucket) => ({
    bucket,
    limit: "rpm",
    params,
    consumedMilli: 1000n,
  }));
  // The store history holds every write: its net is the stored counter.
  const stored = check(
    {
      ...rec.storeHistory(t0, limits),
      finalConsumed: [...tc].map(([bucket, tcMilli]) => ({
        bucket,
        limit: "rpm",
        tcMilli,
      })),
    },
    { slackMilli: 1n },
  );
  assert.ok(stored.ok, `store history: ${format(stored)}`);
  const caller = check(rec.callerHistory(t0, limits, tc), { slackMilli: 1n });
  assert.ok(caller.ok, `caller history: ${format(caller)}`);
  const local = limiters.reduce(
    (s, l) => s + (l.reserveStats()?.localAdmissions ?? 0),
    0,
  );
  assert.ok(
    rec.counts.admitted > 80,
    `${JSON.stringify(rec.counts)} ${rec.errors.join("; ")}`,
  );
  assert.ok(
    local > rec.counts.admitted / 5,
    `${local} of ${JSON.stringify(rec.counts)} served from slices`,
  );
  if (fc) {
    assert.ok(
      fc.faults.log.some((f) => f.kind === "afterApply"),
      "a fault was injected",
    );
    fc[Symbol.dispose]();
  }
  for (const c of clients.splice(0)) c.destroy();
}

Deno.test("localReserve: limiters sharing buckets never over-admit, in DynamoDB or to callers", async () => {
  await sharedHistory(false);
});

Deno.test("localReserve: limiters sharing buckets never over-admit with writes failing before and after they apply", async () => {
  await sharedHistory(true);
});

Deno.test("localReserve: close() gives back, and an expired slice is given back", async () => {
  await using t = await freshRepo();
  await t.repo.setSystemDefaults([Limit.custom("rpm", 1000, 1000, 3600)]);
  const limiter = reserveLimiter(t.repo, {
    localReserve: { ttlMs: 60_000, env: {} },
  });
  const req = { entityId: "k", resource: "api", consume: { rpm: 1 } };
  for (let i = 0; i < 60; i++) await limiter.acquire(req, () => {});
  const held = limiter.reserveStats()?.heldTokens["rpm"] ?? 0;
  assert.ok(held > 0, "a slice is held");
  assert.ok(
    (await storedTk(t.repo, "k", "rpm")).tk <=
      940_000n - BigInt(held * 1000) + 2_000n,
  );
  await limiter.close();
  const after = await storedTk(t.repo, "k", "rpm");
  // 60 admitted of 1000 per hour: only those are gone (plus < 2 refilled).
  assert.ok(after.tk >= 940_000n && after.tk < 942_000n, `tk ${after.tk}`);
  assert.equal(after.tc, 60_000n);

  const short = reserveLimiter(t.repo, {
    localReserve: { ttlMs: 200, env: {} },
  });
  const req2 = { ...req, entityId: "k2" };
  for (let i = 0; i < 60; i++) await short.acquire(req2, () => {});
  assert.ok((short.reserveStats()?.heldTokens["rpm"] ?? 0) > 0);
  const deadline = Date.now() + 10_000;
  while (
    Object.keys(short.reserveStats()?.heldTokens ?? {}).length > 0 &&
    Date.now() < deadline
  ) await new Promise((r) => setTimeout(r, 50));
  // Given back without close(): what another process now sees.
  await new Promise((r) => setTimeout(r, 100));
  const k2 = await storedTk(t.repo, "k2", "rpm");
  assert.equal(k2.tc, 60_000n);
  await short.close();
});

Deno.test("localReserve: a slice write that fails after applying is reported stranded and nothing is admitted from it", async () => {
  await using t = await freshRepo();
  await t.repo.setSystemDefaults([Limit.custom("rpm", 1000, 1000, 3600)]);
  const fc = await faultyClient({ maxAttempts: 3 });
  const repo = await Repository.open({
    client: fc.client,
    stack: t.repo.tableName,
    namespace: t.repo.namespaceName,
  });
  const stranded: StrandedCharge[] = [];
  const limiter = reserveLimiter(repo, {
    localReserve: { ttlMs: 60_000, env: {} },
    onStranded: (c) => stranded.push(c),
  });
  const req = { entityId: "k", resource: "api", consume: { rpm: 1 } };
  try {
    // Warm until a slice is held, then use it up exactly.
    for (let i = 0; i < 10; i++) await limiter.acquire(req, () => {});
    const held = limiter.reserveStats()?.heldTokens["rpm"] ?? 0;
    for (let i = 0; i < held; i++) await limiter.acquire(req, () => {});
    assert.deepEqual(limiter.reserveStats()?.heldTokens, {});
    const before = await storedTk(t.repo, "k", "rpm");
    const taken = limiter.reserveStats()?.slicesTaken;
    fc.faults.inject({
      command: "UpdateItem",
      times: 1,
      fault: { kind: "afterApply", error: "InternalServerError" },
    });
    await assert.rejects(limiter.acquire(req, () => {}), {
      name: "RateLimiterUnavailable",
    });
    const after = await storedTk(t.repo, "k", "rpm");
    const debit = stranded.find((c) => c.kind === "debit");
    assert.ok(debit, "the slice write is reported stranded");
    const charged = BigInt(Math.round((debit.amounts["rpm"] ?? 0) * 1000));
    assert.ok(charged > 1000n, `the failed write carried a slice: ${charged}`);
    assert.equal(after.tc - before.tc, charged, "it did apply");
    assert.equal(limiter.reserveStats()?.slicesTaken, taken);
    assert.deepEqual(limiter.reserveStats()?.heldTokens, {});
    // Later acquires work and take a fresh slice from fresh state.
    for (let i = 0; i < 5; i++) await limiter.acquire(req, () => {});
  } finally {
    await limiter.close();
    fc[Symbol.dispose]();
  }
});

Deno.test("localReserve: cascade and several limits are served when all are covered, and go to DynamoDB otherwise", async () => {
  await using t = await freshRepo();
  await t.repo.setSystemDefaults([
    Limit.custom("rpm", 1000, 1000, 3600),
    Limit.custom("tpm", 100_000, 100_000, 3600),
  ]);
  await t.repo.createEntity("parent");
  await t.repo.createEntity("child", { parentId: "parent", cascade: true });
  const limiter = reserveLimiter(t.repo, {
    localReserve: { ttlMs: 60_000, env: {} },
  });
  const req = {
    entityId: "child",
    resource: "api",
    consume: { rpm: 1, tpm: 100 },
  };
  t.calls.reset();
  for (let i = 0; i < 100; i++) await limiter.acquire(req, () => {});
  const s = limiter.reserveStats();
  assert.ok((s?.localAdmissions ?? 0) >= 60, JSON.stringify(s));
  assert.ok(t.calls.total() < 50, `${t.calls.total()} calls for 100 acquires`);
  await limiter.close();
  for (const entityId of ["child", "parent"]) {
    const rpm = await storedTk(t.repo, entityId, "rpm");
    const tpm = await storedTk(t.repo, entityId, "tpm");
    assert.equal(rpm.tc, 100_000n, `${entityId} rpm`);
    assert.equal(tpm.tc, 10_000_000n, `${entityId} tpm`);
  }

  // Only rpm served: calls consuming tpm go to DynamoDB, one write each.
  const partial = reserveLimiter(t.repo, {
    localReserve: { ttlMs: 60_000, env: {}, limits: ["rpm"] },
  });
  for (let i = 0; i < 5; i++) await partial.acquire(req, () => {});
  t.calls.reset();
  for (let i = 0; i < 20; i++) await partial.acquire(req, () => {});
  assert.equal(partial.reserveStats()?.slicesTaken, 0);
  assert.equal(t.calls.total(), 40, "one write per bucket per acquire");
  await partial.close();
});
