/**
 * The contract every {@linkcode BucketStore} keeps: one suite, run on the
 * memory store by the unit tests (`tests/bucket_store_memory_test.ts`) and on
 * DynamoDB Local by the integration tests
 * (`tests/integration/bucket_store_test.ts`).
 *
 * @module
 */
import assert from "node:assert/strict";
import type {
  BucketStore,
  BucketWrite,
  EntityLink,
} from "../core/acquire/bucket_store.ts";
import type {
  BucketRef,
  PlainLimit,
  PlainWrite,
  PlannedLimit,
  SlowWrite,
} from "../core/bucket_item.ts";
import type { BucketParams } from "../core/bucket.ts";

/** A fresh store for one test. */
export interface StoreFixture extends AsyncDisposable {
  readonly store: BucketStore;
  /** Namespace id the refs use. */
  readonly ns: string;
  /** Stores an entity's cascade link. */
  link(entityId: string, link: EntityLink): Promise<void>;
}

const RPM: BucketParams = { cp: 10_000n, ra: 10_000n, rp: 60_000n };
const T0 = 1_800_000_000_000n;

function ref(ns: string, entityId = "e1", shard = 0): BucketRef {
  return { ns, entityId, resource: "api", shard };
}

function created(
  r: BucketRef,
  tk = 10_000n,
  ttl: number | null = null,
): SlowWrite {
  const limits: PlannedLimit[] = [{
    name: "rpm",
    params: RPM,
    tkBefore: null,
    tkAfter: tk,
    consumed: 0n,
  }];
  return {
    ref: r,
    create: true,
    expectedRf: 0n,
    now: T0,
    limits,
    cascade: false,
    parentId: null,
    shardCount: 1,
    ttl,
  };
}

function plain(
  r: BucketRef,
  limit: Partial<PlainLimit>,
  extra: Partial<PlainWrite> = {},
): BucketWrite {
  return {
    kind: "plain",
    write: {
      ref: r,
      limits: [{
        name: "rpm",
        take: 1000n,
        count: 1000n,
        params: RPM,
        min: 1000n,
        max: 10_000n,
        ...limit,
      }],
      rfMin: T0,
      wcu: 0n,
      notExpiredAt: null,
      ttl: null,
      ...extra,
    },
  };
}

function refillWrite(
  r: BucketRef,
  expectedRf: bigint,
  limit: Partial<PlannedLimit>,
  extra: Partial<SlowWrite> = {},
): BucketWrite {
  return {
    kind: "slow",
    write: {
      ref: r,
      create: false,
      expectedRf,
      now: expectedRf + 1000n,
      limits: [{
        name: "rpm",
        params: RPM,
        paramsBefore: RPM,
        tkBefore: 5000n,
        tkAfter: 4000n,
        consumed: 1000n,
        capped: true,
        ...limit,
      }],
      cascade: false,
      parentId: null,
      shardCount: 1,
      ttl: null,
      ...extra,
    },
  };
}

async function tk(store: BucketStore, r: BucketRef): Promise<bigint | null> {
  const item = (await store.read([r])).items[0];
  return item?.limits.get("rpm")?.tk ?? null;
}

/** Registers the contract tests for one store. */
export function bucketStoreContract(
  name: string,
  fixture: () => Promise<StoreFixture>,
): void {
  const test = (what: string, fn: (f: StoreFixture) => Promise<void>) =>
    Deno.test(`${name}: ${what}`, async () => {
      await using f = await fixture();
      await fn(f);
    });

  test("a missing item reads as null, an unknown entity's link as null", async ({ store, ns }) => {
    const r = await store.read([ref(ns)], { ns, entityId: "e1" });
    assert.deepEqual(r.items, [null]);
    assert.equal(r.link, null);
  });

  test("a create applies once; the second answers the stored item", async ({ store, ns }) => {
    const r = ref(ns);
    assert.deepEqual(await store.write({ kind: "slow", write: created(r) }), {
      ok: true,
      item: null,
    });
    const again = await store.write({
      kind: "slow",
      write: created(r, 3000n),
    });
    assert.equal(again.ok, false);
    assert.equal(!again.ok && again.old?.limits.get("rpm")?.tk, 10_000n);
    const item = (await store.read([r])).items[0];
    assert.equal(item?.rf, T0);
    assert.deepEqual(item?.limits.get("rpm"), {
      tk: 10_000n,
      tc: 0n,
      params: RPM,
    });
    assert.equal(item?.entityId, "e1");
    assert.equal(item?.shardCount, 1);
  });

  test("a plain write applies its ADDs when every condition holds", async ({ store, ns }) => {
    const r = ref(ns);
    await store.write({
      kind: "slow",
      write: created(r, 5000n, 2_000_000_000),
    });
    const w = plain(r, { take: 2000n, count: 2000n, min: 2000n }, {
      wcu: 1000n,
      notExpiredAt: 1_900_000_000,
      ttl: 2_100_000_000,
    });
    assert.deepEqual(await store.write(w), { ok: true, item: null });
    const item = (await store.read([r])).items[0];
    assert.equal(item?.limits.get("rpm")?.tk, 3000n);
    assert.equal(item?.limits.get("rpm")?.tc, 2000n);
    // The hidden wcu limit is created by the ADD.
    assert.equal(item?.limits.get("wcu")?.tk, -1000n);
    assert.equal(item?.ttl, 2_100_000_000);
    // A give-back (negative take) under the ceiling.
    const back = plain(r, { take: -500n, count: -500n, min: null, max: 9500n });
    const answered = await store.write(back, { answer: true });
    assert.equal(answered.ok && answered.item?.limits.get("rpm")?.tk, 3500n);
  });

  test("a plain write fails on each of its conditions, applies nothing, and answers the item", async ({ store, ns }) => {
    const r = ref(ns);
    await store.write({
      kind: "slow",
      write: created(r, 5000n, 1_800_000_100),
    });
    const failing: [string, BucketWrite][] = [
      ["floor", plain(r, { min: 6000n })],
      ["ceiling", plain(r, { max: 4999n })],
      ["empty range", plain(r, { min: 5000n, max: 4000n })],
      ["params", plain(r, { params: { ...RPM, cp: 20_000n } })],
      ["rf", plain(r, {}, { rfMin: T0 + 1n })],
      ["expired", plain(r, {}, { notExpiredAt: 1_800_000_100 })],
      ["missing limit", {
        kind: "plain",
        write: {
          ...(plain(r, {}) as { write: PlainWrite }).write,
          limits: [{
            name: "tpm",
            take: 1n,
            count: 1n,
            params: null,
            min: 1n,
            max: null,
          }],
        },
      }],
    ];
    for (const [why, w] of failing) {
      const res = await store.write(w);
      assert.equal(res.ok, false, why);
      assert.equal(!res.ok && res.old?.limits.get("rpm")?.tk, 5000n, why);
    }
    assert.equal(await tk(store, r), 5000n);
    // A missing item fails every condition and is not created.
    const gone = ref(ns, "nobody");
    assert.deepEqual(await store.write(plain(gone, {})), {
      ok: false,
      old: null,
    });
    assert.deepEqual((await store.read([gone])).items, [null]);
  });

  test("a refill write holds the rf lock, the balance bounds and the parameters", async ({ store, ns }) => {
    const r = ref(ns);
    await store.write({ kind: "slow", write: created(r, 5000n) });
    const failing: [string, BucketWrite][] = [
      ["rf", refillWrite(r, T0 + 1n, {})],
      ["capped", refillWrite(r, T0, { tkBefore: 4999n, tkAfter: 3999n })],
      [
        "exact",
        refillWrite(r, T0, { tkBefore: 5001n, tkAfter: 4001n, exact: true }),
      ],
      [
        "charge not covered",
        refillWrite(r, T0, {
          tkAfter: -2000n,
          consumed: 7000n,
          tkBefore: 5000n,
        }),
      ],
      ["params", refillWrite(r, T0, { paramsBefore: { ...RPM, ra: 1n } })],
      ["new limit exists", refillWrite(r, T0, { tkBefore: null })],
    ];
    for (const [why, w] of failing) {
      const res = await store.write(w);
      assert.equal(res.ok, false, why);
      assert.equal(!res.ok && res.old?.rf, T0, why);
    }
    assert.equal(await tk(store, r), 5000n);
    const ok = await store.write(
      refillWrite(r, T0, { tkAfter: 6000n, consumed: 1000n }, {
        parentId: "p1",
        cascade: true,
        ttl: 2_000_000_000,
      }),
      { answer: true },
    );
    assert.equal(ok.ok, true);
    const item = (await store.read([r])).items[0];
    assert.equal(item?.rf, T0 + 1000n);
    assert.equal(item?.limits.get("rpm")?.tk, 6000n);
    assert.equal(item?.limits.get("rpm")?.tc, 1000n);
    assert.equal(item?.parentId, "p1");
    assert.equal(item?.cascade, true);
    assert.equal(item?.ttl, 2_000_000_000);
    assert.equal(ok.ok && ok.item?.rf, T0 + 1000n);
    // Debt allowed (check: false); ttl and parent removed; a limit added.
    const debt = await store.write(
      refillWrite(r, T0 + 1000n, {
        tkBefore: 6000n,
        tkAfter: -1000n,
        consumed: 7000n,
        check: false,
      }, { ttl: "remove" }),
    );
    assert.equal(debt.ok, true);
    const after = (await store.read([r])).items[0];
    assert.equal(after?.limits.get("rpm")?.tk, -1000n);
    assert.equal(after?.ttl, null);
    assert.equal(after?.parentId, null);
  });

  test("debt and shard writes", async ({ store, ns }) => {
    const r = ref(ns);
    await store.write({ kind: "slow", write: created(r, 1000n) });
    assert.deepEqual(
      await store.write({
        kind: "debt",
        ref: r,
        deltas: new Map([["rpm", 3000n]]),
      }),
      { ok: true, item: null },
    );
    assert.equal(await tk(store, r), -2000n);
    const shards = (from: number, to: number): BucketWrite => ({
      kind: "shards",
      ref: r,
      from,
      to,
    });
    assert.equal((await store.write(shards(2, 4))).ok, false);
    assert.equal((await store.write(shards(1, 2))).ok, true);
    assert.equal((await store.read([r])).items[0]?.shardCount, 2);
  });

  test("a transaction applies every write or none", async ({ store, ns }) => {
    const a = ref(ns, "a");
    const b = ref(ns, "b");
    await store.write({ kind: "slow", write: created(a, 5000n) });
    await store.write({ kind: "slow", write: created(b, 500n) });
    const refused = await store.transact([plain(a, {}), plain(b, {})]);
    assert.equal(refused.ok, false);
    if (!refused.ok) {
      assert.equal(refused.olds[0], null);
      assert.equal(refused.olds[1]?.limits.get("rpm")?.tk, 500n);
    }
    assert.equal(await tk(store, a), 5000n);
    assert.equal(await tk(store, b), 500n);
    const c = ref(ns, "c");
    const ok = await store.transact([
      plain(a, {}),
      { kind: "slow", write: created(c, 2000n) },
    ]);
    assert.deepEqual(ok, { ok: true });
    assert.equal(await tk(store, a), 4000n);
    assert.equal(await tk(store, c), 2000n);
  });

  test("the entity link is read with the items in one call", async ({ store, ns, link }) => {
    await link("child", { cascade: true, parentId: "parent" });
    const r = await store.read([ref(ns, "child")], { ns, entityId: "child" });
    assert.deepEqual(r.link, { cascade: true, parentId: "parent" });
  });
}
