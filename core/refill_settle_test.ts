import assert from "node:assert/strict";
import { Limit } from "../mod.ts";
import { createTestLimiter } from "../testing.ts";
import { refilling } from "./refill_settle.ts";

Deno.test("A lease.consume of one limit that refills the item settles the item's other limits too (their refill since rf is not lost)", async () => {
  const { limiter, source, store } = createTestLimiter({
    limiter: { onError: () => {} },
  });
  // a: 10 per 6 s (slow); b: 60 a second, capacity 100 (fast).
  source.setSystemDefaults([
    Limit.custom("a", 10, 10, 6),
    Limit.custom("b", 100, 60, 1),
  ]);
  const req = {
    entityId: "k",
    resource: "api",
    consume: { a: 9, b: 95 },
  };
  const lease = await limiter.acquire(req); // a: 1 left, b: 5 left
  await new Promise((r) => setTimeout(r, 700)); // a: 1 + 1.17, b: 5 + 42
  // 2 of `a` is more than the writer's last answer showed (1): a refill
  // write under the rf lock, which moves the item's one rf.
  await lease.consume({ a: 2 });
  await lease.commit();
  const item = store.get({
    ns: "default",
    entityId: "k",
    resource: "api",
    shard: 0,
  });
  // The stored pair of b stands for its full refill (5 + 60 a second
  // since the acquire); losing it at the rf move would leave about 5.
  const b = item?.limits.get("b");
  assert.ok(b && item, "the item holds b");
  const at = BigInt(Date.now());
  const credited = b.tk + (at > item.rf ? ((at - item.rf) * 60n) : 0n);
  assert.ok(
    credited >= 5000n + 600n * 60n, // 100 ms for the new bucket's holdback and rounding
    `b holds ${b.tk} at rf ${item.rf} (${credited} now): its refill was lost`,
  );
});

Deno.test("refilling() lists the item's refilling limits that the write does not name, at their stored parameters per shard", () => {
  const item = {
    rf: 0n,
    limits: new Map([
      ["a", { tk: 1n, params: { cp: 10n, ra: 10n, rp: 60_000n }, tc: 0n }],
      ["b", { tk: 2n, params: { cp: 100n, ra: 60n, rp: 1000n }, tc: 0n }],
      ["wcu", { tk: 3n, params: { cp: 1n, ra: 1n, rp: 1n }, tc: 0n }],
    ]),
  } as unknown as Parameters<typeof refilling>[0];
  const out = refilling(item, 2, new Set(["a"]));
  assert.deepEqual(out.map((o) => [o.name, o.p]), [
    ["b", { cp: 50n, ra: 30n, rp: 1000n }],
  ]);
});
