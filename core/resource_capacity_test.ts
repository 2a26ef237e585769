import assert from "node:assert/strict";
import type { BucketItem, StoredLimit } from "./bucket_item.ts";
import {
  type EntityCapacity,
  ResourceCapacityAccumulator,
} from "./resource_capacity.ts";

const MINUTE = { cp: 60_000n, ra: 60_000n, rp: 60_000n }; // 60 per minute = 1 token/s

function item(
  entityId: string,
  limits: Record<string, { tk: bigint; cp?: bigint }>,
  more: Partial<BucketItem> = {},
): BucketItem {
  const map = new Map<string, StoredLimit>();
  for (const [name, l] of Object.entries(limits)) {
    map.set(name, {
      tk: l.tk,
      params: { ...MINUTE, ...(l.cp !== undefined ? { cp: l.cp } : {}) },
      tc: null,
    });
  }
  return {
    entityId,
    resource: "gpt",
    shard: 0,
    rf: 0n,
    shardCount: 1,
    cascade: false,
    parentId: null,
    ttl: null,
    limits: map,
    ...more,
  };
}

Deno.test("ResourceCapacityAccumulator refills to now, caps at capacity and counts debt", () => {
  const seen: EntityCapacity[] = [];
  // now = 10 s after rf: +10 tokens of refill.
  const acc = new ResourceCapacityAccumulator("gpt", 10_000, {
    onEntity: (e) => seen.push(e),
  });
  acc.add(item("a", { rpm: { tk: 20_000n } })); // 20 + 10 = 30
  acc.add(item("b", { rpm: { tk: 55_000n } })); // 55 + 10, capped at 60
  acc.add(item("c", { rpm: { tk: -15_500n } })); // -15.5 + 10 = -5.5 -> -6
  const r = acc.finish();
  assert.deepEqual(r.limits, [{
    limitName: "rpm",
    entities: 3,
    totalCapacity: 180,
    totalAvailable: 30 + 60 - 6,
    utilizationPct: Math.round((180 - 84) / 180 * 10_000) / 100,
  }]);
  assert.equal(r.entities, 3);
  assert.equal(r.bucketItems, 3);
  assert.equal(r.asOf, 10_000);
  assert.deepEqual(seen.map((e) => [e.entityId, e.limits["rpm"]]), [
    ["a", { capacity: 60, available: 30 }],
    ["b", { capacity: 60, available: 60 }],
    ["c", { capacity: 60, available: -6 }],
  ]);
});

Deno.test("ResourceCapacityAccumulator sums the shards of one entity and counts a missing shard full", () => {
  const acc = new ResourceCapacityAccumulator("gpt", 0);
  // Stored params stay undivided; each of 4 shards holds at most 15 tokens.
  acc.add(item("a", { rpm: { tk: 5_000n } }, { shardCount: 4 }));
  acc.add(item("a", { rpm: { tk: 10_000n } }, { shard: 1, shardCount: 4 }));
  acc.add(item("a", { rpm: { tk: 99_000n } }, { shard: 3, shardCount: 4 }));
  // shard 2 missing: 15; shard 3 above the per-shard capacity: 15.
  const r = acc.finish();
  assert.equal(r.entities, 1);
  assert.equal(r.bucketItems, 3);
  assert.equal(r.limits[0]?.totalCapacity, 60);
  assert.equal(r.limits[0]?.totalAvailable, 5 + 10 + 15 + 15);
});

Deno.test("ResourceCapacityAccumulator skips wcu, filters by limit name and by parent", () => {
  const entities = [
    item("child", { rpm: { tk: 1_000n }, tpm: { tk: 0n, cp: 600_000n } }, {
      parentId: "p",
    }),
    item("p", {
      rpm: { tk: 2_000n },
      tpm: { tk: 300_000n, cp: 600_000n },
      wcu: { tk: 0n, cp: 1_000_000n },
    }),
  ];
  const all = new ResourceCapacityAccumulator("gpt", 0);
  for (const e of entities) all.add(e);
  assert.deepEqual(
    all.finish().limits.map((l) => [l.limitName, l.entities, l.totalAvailable]),
    [["rpm", 2, 3], ["tpm", 2, 300]],
  );

  const tpmParents = new ResourceCapacityAccumulator("gpt", 0, {
    limitName: "tpm",
    parentsOnly: true,
  });
  for (const e of entities) tpmParents.add(e);
  const r = tpmParents.finish();
  assert.equal(r.entities, 1);
  assert.equal(r.bucketItems, 2);
  assert.deepEqual(r.limits, [{
    limitName: "tpm",
    entities: 1,
    totalCapacity: 600,
    totalAvailable: 300,
    utilizationPct: 50,
  }]);
});

Deno.test("ResourceCapacityAccumulator reports nothing for no items", () => {
  const r = new ResourceCapacityAccumulator("gpt", 0).finish();
  assert.deepEqual(r, {
    resource: "gpt",
    asOf: 0,
    entities: 0,
    bucketItems: 0,
    limits: [],
  });
});

Deno.test("ResourceCapacityAccumulator reads a calendar quota as what is left of its window, full once it ended", () => {
  const seen: EntityCapacity[] = [];
  const acc = new ResourceCapacityAccumulator("gpt", 10_000, {
    onEntity: (e) => seen.push(e),
  });
  const quota = (tk: bigint, we: bigint): BucketItem => {
    const it = item("x", { usd: { tk } });
    const st = it.limits.get("usd") as StoredLimit;
    (it.limits as Map<string, StoredLimit>).set("usd", { ...st, ws: 0n, we });
    return { ...it, entityId: `e${we}` };
  };
  acc.add(quota(5_000n, 20_000n)); // window still open: 5, no refill
  acc.add(quota(5_000n, 10_000n)); // window ended at now: full
  acc.finish();
  assert.deepEqual(seen.map((e) => e.limits["usd"]?.available), [5, 60]);
});
