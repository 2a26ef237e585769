import assert from "node:assert/strict";
import type { Clock } from "../clock.ts";
import { EntityCache } from "./entity_cache.ts";

function clockAt(now: { t: number }): Clock {
  return { now: () => now.t, sleep: () => Promise.resolve() };
}

Deno.test("EntityCache.remember() keeps shard counts across updates and sets refreshAt", () => {
  const now = { t: 1_000 };
  const cache = new EntityCache({
    clock: clockAt(now),
    size: 10,
    refreshSeconds: 60,
  });
  cache.remember("ns", "a", {
    cascade: true,
    parentId: "p",
    shard: { resource: "api", count: 2 },
  });
  now.t = 2_000;
  cache.remember("ns", "a", { cascade: false, parentId: null });
  const info = cache.get("ns", "a");
  assert.equal(info?.cascade, false);
  assert.equal(info?.parentId, null);
  assert.deepEqual([...info?.shards ?? []], [["api", 2]]);
  assert.equal(info?.refreshAt, 62_000);
  assert.equal(cache.get("other", "a"), undefined);
});

Deno.test("EntityCache evicts the oldest entry when full, and forget() drops one", () => {
  const cache = new EntityCache({
    clock: clockAt({ t: 0 }),
    size: 2,
    refreshSeconds: 1,
  });
  const link = { cascade: false, parentId: null };
  cache.remember("ns", "a", link);
  cache.remember("ns", "b", link);
  cache.remember("ns", "a", link); // touched: now the newest
  cache.remember("ns", "c", link);
  assert.equal(cache.get("ns", "b"), undefined);
  assert.ok(cache.get("ns", "a"));
  assert.ok(cache.get("ns", "c"));
  cache.forget("ns", "a");
  assert.equal(cache.get("ns", "a"), undefined);
});
