import assert from "node:assert/strict";
import { Limit, RateLimitExceeded } from "../mod.ts";
import { createTestLimiter } from "../testing.ts";

function fakeClock(start: number) {
  let t = start;
  return {
    now: () => t,
    sleep: (ms: number) => {
      t += ms;
      return Promise.resolve();
    },
    set: (v: number) => {
      t = v;
    },
  };
}

const ASK = { entityId: "k", resource: "api" } as const;

Deno.test("a calendar quota is not refilled inside its window and resets exactly at the boundary", async () => {
  const clock = fakeClock(Date.UTC(2026, 0, 31, 12));
  const { limiter, source, store } = createTestLimiter({ source: { clock } });
  source.setSystemDefaults([
    Limit.perMinute("rpm", 1000),
    Limit.perCalendar("usd", 10, { period: "month" }),
  ]);
  for (let i = 0; i < 10; i++) {
    await limiter.acquire({ ...ASK, consume: { rpm: 1, usd: 1 } }, () => {});
  }
  // Eleven hours later (the rolling rpm refilled), usd is still spent.
  clock.set(Date.UTC(2026, 0, 31, 23, 59, 59, 999));
  const refused = await limiter.acquire({ ...ASK, consume: { rpm: 1, usd: 1 } })
    .then(() => null, (e) => e);
  assert.ok(refused instanceof RateLimitExceeded);
  const usd = refused.statuses.find((s) => s.limitName === "usd");
  assert.equal(usd?.exceeded, true);
  assert.equal(usd?.retryAfterSeconds, 0.001); // the month ends in 1 ms
  // All or nothing: the refused call charged rpm nothing.
  const item = store.get({ ns: "default", ...ASK, shard: 0 });
  assert.equal(item?.limits.get("rpm")?.tc, 10_000n);
  assert.equal(item?.limits.get("usd")?.ws, BigInt(Date.UTC(2026, 0, 1)));
  assert.equal(item?.limits.get("usd")?.we, BigInt(Date.UTC(2026, 1, 1)));
  // At the boundary: the full quota again, in the new window.
  clock.set(Date.UTC(2026, 1, 1));
  for (let i = 0; i < 10; i++) {
    await limiter.acquire({ ...ASK, consume: { usd: 1 } }, () => {});
  }
  await assert.rejects(
    limiter.acquire({ ...ASK, consume: { usd: 1 } }),
    RateLimitExceeded,
  );
  const after = store.get({ ns: "default", ...ASK, shard: 0 });
  assert.equal(after?.limits.get("usd")?.tk, 0n);
  assert.equal(after?.limits.get("usd")?.tc, 20_000n);
  assert.equal(after?.limits.get("usd")?.ws, BigInt(Date.UTC(2026, 1, 1)));
  assert.equal(after?.limits.get("usd")?.we, BigInt(Date.UTC(2026, 2, 1)));
  assert.deepEqual(
    await limiter.available({ ...ASK }).then((a) => a["usd"]),
    0,
  );
  assert.equal(
    await limiter.timeUntilAvailable({ ...ASK, needed: { usd: 1 } }),
    28 * 86_400,
  );
});

Deno.test("a calendar quota's lease: adjust in the window, a give-back capped at the capacity, a late delta dropped", async () => {
  const clock = fakeClock(Date.UTC(2026, 5, 10, 8));
  const { limiter, source, store } = createTestLimiter({ source: { clock } });
  source.setSystemDefaults([
    Limit.perCalendar("usd", 100, { period: "day", timeZone: "Europe/Berlin" }),
  ]);
  const lease = await limiter.acquire({ ...ASK, consume: { usd: 40 } });
  await lease.adjust({ usd: 30 }); // 70 spent
  await lease.commit();
  const get = () =>
    store.get({ ns: "default", ...ASK, shard: 0 })?.limits.get("usd");
  assert.equal(get()?.tk, 30_000n);
  const back = await limiter.acquire({ ...ASK, consume: { usd: 30 } });
  await back.rollback();
  assert.equal(get()?.tk, 30_000n);
  // A lease that outlives its window: its late delta is not carried over.
  const late = await limiter.acquire({ ...ASK, consume: { usd: 30 } });
  clock.set(Date.UTC(2026, 5, 10, 22)); // midnight in Berlin (CEST)
  await late.adjust({ usd: 50 });
  await late.commit();
  await limiter.acquire({ ...ASK, consume: { usd: 100 } }, () => {});
  assert.equal(get()?.tk, 0n);
  assert.equal(get()?.ws, BigInt(Date.UTC(2026, 5, 10, 22)));
});

Deno.test("a calendar quota with cascade: the parent's monthly budget is shared, all or nothing", async () => {
  const clock = fakeClock(Date.UTC(2026, 2, 3));
  const { limiter, source, store } = createTestLimiter({ source: { clock } });
  source.createEntity("org");
  source.createEntity("a", { parentId: "org", cascade: true });
  source.createEntity("b", { parentId: "org", cascade: true });
  source.setLimits("org", [Limit.perCalendar("usd", 5, { period: "week" })]);
  source.setLimits("a", [Limit.perCalendar("usd", 4, { period: "week" })]);
  source.setLimits("b", [Limit.perCalendar("usd", 4, { period: "week" })]);
  await limiter.acquire(
    { entityId: "a", resource: "api", consume: { usd: 3 } },
    () => {},
  );
  await assert.rejects(
    limiter.acquire({ entityId: "b", resource: "api", consume: { usd: 3 } }),
    RateLimitExceeded,
  );
  const tc = (id: string) =>
    store.get({ ns: "default", entityId: id, resource: "api", shard: 0 })
      ?.limits.get("usd")?.tc ?? 0n;
  assert.equal(tc("b"), 0n); // refused by the parent: b not charged
  await limiter.acquire(
    { entityId: "b", resource: "api", consume: { usd: 2 } },
    () => {},
  );
  assert.equal(tc("org"), 5000n);
  clock.set(Date.UTC(2026, 2, 9)); // Monday
  await limiter.acquire(
    { entityId: "b", resource: "api", consume: { usd: 3 } },
    () => {},
  );
  assert.equal(tc("org"), 8000n);
});

Deno.test("a limit changed from a calendar quota to a rolling one loses its window at the next write", async () => {
  const clock = fakeClock(Date.UTC(2026, 4, 5, 10));
  const { limiter, source, store } = createTestLimiter({ source: { clock } });
  source.setSystemDefaults([Limit.perCalendar("usd", 10, { period: "day" })]);
  await limiter.acquire({ ...ASK, consume: { usd: 4 } }, () => {});
  const get = () =>
    store.get({ ns: "default", ...ASK, shard: 0 })?.limits.get("usd");
  assert.equal(get()?.ws, BigInt(Date.UTC(2026, 4, 5)));
  source.setSystemDefaults([Limit.perMinute("usd", 10)]);
  clock.set(Date.UTC(2026, 4, 5, 10, 0, 30)); // 5 tokens refilled since
  await limiter.acquire({ ...ASK, consume: { usd: 1 } }, () => {});
  assert.equal(get()?.ws, undefined);
  assert.equal(get()?.we, undefined);
  // Rolling from here: a give-back is capped by the rolling rules again.
  const lease = await limiter.acquire({ ...ASK, consume: { usd: 2 } });
  await lease.rollback();
  assert.ok((get()?.tk ?? 0n) <= 10_000n);
});
