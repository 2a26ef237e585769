import assert from "node:assert/strict";
import { Limit, RateLimiter, RateLimitExceeded } from "../mod.ts";
import { createTestLimiter } from "../testing.ts";
import { type BucketItem, settleWrite } from "./bucket_item.ts";
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

/** A clock that moves only when told (no real waits). */
function manualClock(start: number) {
  let t = start;
  return {
    now: () => t,
    sleep: (ms: number) => {
      t += ms;
      return Promise.resolve();
    },
    advance: (ms: number) => {
      t += ms;
    },
  };
}

for (
  const [how, second] of [
    ["a per-call override of the other limit", "override"],
    ["a config that no longer has it", "config"],
  ] as const
) {
  Deno.test(`A slow-path refill settles a limit stored on the item but outside the call's limits (${how}): its refill since rf is not lost`, async () => {
    const clock = manualClock(1_000_000);
    const { limiter, source, store } = createTestLimiter({
      source: { clock },
      limiter: { onError: () => {} },
    });
    const a = Limit.custom("a", 10, 10, 6); // 10 per 6 s (slow)
    const b = Limit.custom("b", 100, 60, 1); // 60 a second, capacity 100
    source.setSystemDefaults([a, b]);
    const req = { entityId: "k", resource: "api" };
    await (await limiter.acquire({ ...req, consume: { a: 1, b: 95 } }))
      .commit(); // b: 5 left
    const ref = { ns: "default", ...req, shard: 0 };
    const before = store.get(ref);
    assert.ok(before, "the acquire created the item");
    clock.advance(700); // b: 5 + 60 × 0.7 (from its rf)
    // A second process (no known state: the slow path) whose call does not
    // know b moves the item's one rf.
    if (second === "config") source.setSystemDefaults([a]);
    const other = new RateLimiter(source, { bucketStore: store });
    await (await other.acquire({
      ...req,
      consume: { a: 1 },
      ...(second === "override" ? { limits: [a] } : {}),
    })).commit();
    const item = store.get(ref);
    const st = item?.limits.get("b");
    assert.ok(item && st, "the item still holds b");
    assert.ok(item.rf > before.rf, "the slow path moved rf");
    // What b's stored pair stands for now, and what it stood for before.
    const now = BigInt(clock.now());
    const credit = (tk: bigint, rf: bigint) =>
      tk + (now > rf ? ((now - rf) * 60n) : 0n);
    const had = credit(before.limits.get("b")?.tk ?? 0n, before.rf);
    assert.ok(had >= 5000n + 600n * 60n, `b stood for ${had} before`);
    assert.ok(
      credit(st.tk, item.rf) >= had - 1n,
      `b holds ${st.tk} at rf ${item.rf} (${
        credit(st.tk, item.rf)
      } now, ${had} before the write): its refill was lost`,
    );
  });
}

Deno.test("A config change settled on a bucket (settleWrite) refills the item's limits outside the new config with its rf", () => {
  const item: BucketItem = {
    entityId: "k",
    resource: "api",
    shard: 0,
    rf: 1_000_000n,
    shardCount: 1,
    cascade: false,
    parentId: null,
    ttl: null,
    limits: new Map([
      ["a", {
        tk: 1000n,
        params: { cp: 10000n, ra: 10000n, rp: 6000n },
        tc: 0n,
      }],
      ["b", {
        tk: 5000n,
        params: { cp: 100000n, ra: 60000n, rp: 1000n },
        tc: 0n,
      }],
    ]),
  };
  const ref = { ns: "default", entityId: "k", resource: "api", shard: 0 };
  const w = settleWrite(
    "t",
    ref,
    item,
    [Limit.custom("a", 20, 20, 6)],
    null,
    1_000_700,
  );
  assert.ok(w?.UpdateExpression, "a write");
  // The expression with its placeholders put back.
  let text = w.UpdateExpression;
  for (const [p, v] of Object.entries(w.ExpressionAttributeValues ?? {})) {
    text = text.replaceAll(new RegExp(`${p}(?!\\d)`, "g"), String(v.N ?? v.S));
  }
  for (const [p, n] of Object.entries(w.ExpressionAttributeNames ?? {})) {
    text = text.replaceAll(new RegExp(`${p}(?!\\d)`, "g"), n);
  }
  assert.match(text, /\brf = 1000700\b/, text);
  // b: 5 + 60 a second for 700 ms, credited as the rf moves.
  assert.match(text, /\bb_b_tk 42000\b/, `b's refill is lost: ${text}`);
});

Deno.test("A full limit stored outside the call's limits rides along a refill without making it a full-bucket one (no holdback lost on every refill write)", async () => {
  const clock = manualClock(1_000_000);
  const { limiter, source, store } = createTestLimiter({
    source: { clock },
    limiter: { onError: () => {} },
  });
  const b = Limit.custom("b", 100, 100, 1);
  // z stays on the item, full, after the config drops it.
  source.setSystemDefaults([b, Limit.custom("z", 1000, 1000, 60)]);
  const req = { entityId: "k", resource: "api", consume: { b: 1 } };
  await (await limiter.acquire(req)).commit();
  source.setSystemDefaults([b]);
  const fresh = new RateLimiter(source, { bucketStore: store });
  let admitted = 0;
  const start = clock.now();
  while (clock.now() - start < 3000) {
    clock.advance(2);
    for (let i = 0; i < 3; i++) {
      try {
        await (await fresh.acquire(req)).commit();
        admitted++;
      } catch (e) {
        if (!(e instanceof RateLimitExceeded)) throw e;
      }
    }
  }
  // The ideal bucket: 99 left, then 100 a second for 3 s. A refill write
  // made a full-bucket one by z holds back 10 ms (b's 1%) each time: about
  // half of the refill was lost.
  assert.ok(admitted >= 99 + 300 - 5, `admitted ${admitted} of 399`);
  assert.ok(admitted <= 99 + 300, `admitted ${admitted} of 399`);
});

for (const charged of [false, true]) {
  Deno.test(
    `A full limit that ${
      charged
        ? "the calls charge (it refills faster)"
        : "the calls do not charge"
    } costs the binding limit nothing at each refill write (no holdback of its refill)`,
    async () => {
      const clock = manualClock(1_000_000);
      const { limiter, source } = createTestLimiter({
        source: { clock },
        limiter: { onError: () => {} },
      });
      // b binds; z is full at every refill write of b's.
      source.setSystemDefaults([
        Limit.custom("b", 100, 100, 1),
        Limit.custom("z", 1000, 1000, 1),
      ]);
      const req = {
        entityId: "k",
        resource: "api",
        consume: charged ? { b: 1, z: 1 } : { b: 1 },
      };
      let admitted = 0;
      const start = clock.now();
      while (clock.now() - start < 3000) {
        clock.advance(2);
        for (let i = 0; i < 3; i++) {
          try {
            await (await limiter.acquire(req)).commit();
            admitted++;
          } catch (e) {
            if (!(e instanceof RateLimitExceeded)) throw e;
          }
        }
      }
      // The ideal bucket: 100, then 100 a second for 3 s (the first 2 ms
      // before the first call). A refill write that put rf 10 ms ahead for
      // z lost b's refill of those 10 ms each time (250 of 400).
      assert.ok(admitted >= 400 - 5, `admitted ${admitted} of 400`);
      assert.ok(admitted <= 400, `admitted ${admitted} of 400`);
    },
  );
}

Deno.test("A request of a limit's whole capacity fits when that limit is full and another on the item is not (the hold applies after the charge)", async () => {
  const clock = manualClock(1_000_000);
  const { limiter, source, store } = createTestLimiter({
    source: { clock },
    limiter: { onError: () => {} },
  });
  source.setSystemDefaults([
    Limit.custom("b", 10, 10, 1),
    Limit.custom("c", 100, 1, 60),
  ]);
  const req = { entityId: "k", resource: "api" };
  await (await limiter.acquire({ ...req, consume: { b: 1, c: 50 } })).commit();
  clock.advance(2000); // b full again, c not
  const fresh = new RateLimiter(source, { bucketStore: store }); // slow path
  await (await fresh.acquire({ ...req, consume: { b: 10, c: 1 } })).commit();
  await (await limiter.acquire({ ...req, consume: { c: 1 } })).commit();
  await assert.rejects(
    limiter.acquire({ ...req, consume: { b: 1 } }),
    RateLimitExceeded,
  );
});
