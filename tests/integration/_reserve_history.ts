/**
 * Test support: one local reserve history on DynamoDB Local, checked by the
 * oracle (`tests/_oracle/reserve_recorder.ts`): three limiters (separate SDK
 * clients, repositories, caches and slices, like separate processes) share
 * a child bucket (cascading to a parent) and a solo bucket for 2.5 s of
 * real time; with `faults`, the third sends through a client that fails 4%
 * of its UpdateItems after DynamoDB applied them (the answer lost) and 4%
 * before. Used by `tests/integration/reserve_test.ts` and
 * `dev/soak_reserve.ts` (`deno task soak:reserve`).
 *
 * @module
 */
import assert from "node:assert/strict";
import { DynamoBucketStore } from "../../core/store/dynamo_bucket_store.ts";
import { tableOf } from "../../core/store/table.ts";
import {
  Limit,
  RateLimiter,
  type RateLimiterOptions,
  Repository,
} from "../../mod.ts";
import { check, type Report } from "../_oracle/checker.ts";
import { ReserveRecorder } from "../_oracle/reserve_recorder.ts";
import { faultyClient } from "./_faults.ts";
import { freshRepo, localClient } from "./_harness.ts";

const clients: { destroy(): void }[] = [];

/** Destroys the clients {@linkcode openAs} made. */
export function destroyClients(): void {
  for (const c of clients.splice(0)) c.destroy();
}

/** Another repository (its own client) on the same table and namespace. */
export async function openAs(repo: Repository): Promise<Repository> {
  const { client } = await localClient();
  clients.push(client);
  return await Repository.open({
    client,
    stack: repo.tableName,
    namespace: repo.namespaceName,
  });
}

/** A limiter on `repo`, its bucket writes recorded by `recorder` when given. */
export function reserveLimiter(
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

/** The stored `tk` and `tc` of one limit of `entityId`'s bucket on resource `api`. */
export async function storedTk(
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

/** What {@linkcode reserveHistory} found. */
export interface ReserveHistoryResult {
  /** The oracle on every write DynamoDB saw (and the stored `tc`). */
  readonly store: Report;
  /** The oracle on what callers saw (and the stored `tc`). */
  readonly caller: Report;
  /** Acquires admitted, refused, failed. */
  readonly counts: { admitted: number; refused: number; error: number };
  /** The first errors callers saw. */
  readonly errors: readonly string[];
  /** Acquires admitted from slices. */
  readonly local: number;
  /** UpdateItems whose answer was lost after they applied (with faults). */
  readonly lostAnswers: number;
}

/**
 * Three limiters share a child (cascading to a parent) and a solo bucket
 * for 2.5 s; with `faults`, the third sends through a client that fails 4%
 * of its UpdateItems after DynamoDB applied them (the answer lost) and 4%
 * before. Both histories must pass the oracle.
 */
export async function reserveHistory(
  options: { readonly faults: boolean; readonly seed: number },
): Promise<ReserveHistoryResult> {
  const faults = options.faults;
  await using t = await freshRepo();
  const capacity = 60;
  await t.repo.setSystemDefaults([Limit.custom("rpm", capacity, capacity, 1)]);
  await t.repo.createEntity("parent");
  await t.repo.createEntity("child", { parentId: "parent", cascade: true });
  const rec = new ReserveRecorder("rpm");
  const fc = faults
    ? await faultyClient({ maxAttempts: 3, seed: options.seed })
    : null;
  // Often enough that a history of ~100 writes loses some answers (at 0.04,
  // seed 11 lost none once the reserve wrote less).
  fc?.faults.inject({
    command: "UpdateItem",
    probability: 0.1,
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
  // At least 2.5 s and 120 calls (a loaded machine makes calls slow: the
  // checks need traffic, not speed), at most 30 s.
  const end = Date.now() + 2500;
  const hardEnd = Date.now() + 30_000;
  let calls = 0;
  let seed = options.seed % 2 ** 31 || 7;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  await Promise.all(
    limiters.flatMap((limiter, i) =>
      Array.from({ length: 4 }, async () => {
        while ((Date.now() < end || calls < 120) && Date.now() < hardEnd) {
          calls++;
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
  const caller = check(rec.callerHistory(t0, limits, tc), { slackMilli: 1n });
  const local = limiters.reduce(
    (s, l) => s + (l.reserveStats()?.localAdmissions ?? 0),
    0,
  );
  const injected = fc?.faults.log.filter((f) => f.kind === "afterApply")
    .length ?? 0;
  fc?.[Symbol.dispose]();
  destroyClients();
  return {
    store: stored,
    caller,
    counts: { ...rec.counts },
    errors: [...rec.errors],
    local,
    lostAnswers: injected,
  };
}
