/**
 * Calendar-aligned quotas (issue 14) on DynamoDB Local: the stored form,
 * the reset at the window boundary under an injected clock (a day window
 * cannot turn during a test on the real clock), the unchanged-window path
 * on the real clock, several limits, cascade, rollback and concurrency.
 */
import assert from "node:assert/strict";
import { GetItemCommand } from "@aws-sdk/client-dynamodb";
import {
  calendarWindow,
  Limit,
  RateLimiter,
  RateLimitExceeded,
} from "../../mod.ts";
import { freshRepo, manualClock } from "./_harness.ts";

type Env = Awaited<ReturnType<typeof freshRepo>>;

async function bucket(
  env: Env,
  entityId: string,
  resource = "api",
): Promise<Record<string, string>> {
  const r = await env.client.send(
    new GetItemCommand({
      TableName: env.repo.tableName,
      Key: {
        PK: { S: env.repo.bucketPk(entityId, resource) },
        SK: { S: "#STATE" },
      },
      ConsistentRead: true,
    }),
  );
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(r.Item ?? {})) {
    if (k.startsWith("b_usd_") || k.startsWith("b_rpm_")) out[k] = v.N ?? "";
  }
  return out;
}

Deno.test("a calendar quota is stored Python-readable, reset at the boundary in one write, and refuses all or nothing (injected clock)", async () => {
  const clock = manualClock(Date.UTC(2026, 0, 31, 23, 0));
  await using env = await freshRepo({ clock });
  await env.repo.setSystemDefaults([
    Limit.perMinute("rpm", 1000),
    Limit.perCalendar("usd", 5, { period: "month" }),
  ]);
  const limiter = new RateLimiter(env.repo);
  const ask = { entityId: "k", resource: "api" };
  for (let i = 0; i < 5; i++) {
    await limiter.acquire({ ...ask, consume: { rpm: 1, usd: 1 } }, () => {});
  }
  assert.deepEqual(await bucket(env, "k"), {
    "b_rpm_tk": "995000",
    "b_rpm_cp": "1000000",
    "b_rpm_ra": "1000000",
    "b_rpm_rp": "60000",
    "b_rpm_tc": "5000",
    "b_usd_tk": "0",
    "b_usd_cp": "5000",
    "b_usd_ra": "5000",
    "b_usd_rp": "2678400000",
    "b_usd_tc": "5000",
    "b_usd_ws": String(Date.UTC(2026, 0, 1)),
    "b_usd_we": String(Date.UTC(2026, 1, 1)),
  });
  // One millisecond before the boundary: refused, and rpm is not charged.
  clock.advance(3_600_000 - 1);
  const e = await limiter.acquire({ ...ask, consume: { rpm: 1, usd: 1 } })
    .then(() => null, (x) => x);
  assert.ok(e instanceof RateLimitExceeded);
  assert.equal(
    e.statuses.find((s) => s.limitName === "usd")?.retryAfterSeconds,
    0.001,
  );
  assert.equal((await bucket(env, "k"))["b_rpm_tc"], "5000");
  // At the boundary: one write resets the window and charges.
  clock.advance(1);
  env.calls.reset();
  await limiter.acquire({ ...ask, consume: { rpm: 1, usd: 2 } }, () => {});
  assert.deepEqual(Object.fromEntries(env.calls.counts), {
    UpdateItemCommand: 1,
  });
  const after = await bucket(env, "k");
  assert.equal(after["b_usd_tk"], "3000");
  assert.equal(after["b_usd_tc"], "7000");
  assert.equal(after["b_usd_ws"], String(Date.UTC(2026, 1, 1)));
  assert.equal(after["b_usd_we"], String(Date.UTC(2026, 2, 1)));
  // The window's quota, then a refusal; a rollback gives back into the window.
  const lease = await limiter.acquire({ ...ask, consume: { usd: 3 } });
  await assert.rejects(
    limiter.acquire({ ...ask, consume: { usd: 1 } }),
    RateLimitExceeded,
  );
  await lease.rollback();
  assert.equal((await bucket(env, "k"))["b_usd_tk"], "3000");
  // Config read back: period and zone in the new attributes.
  assert.deepEqual(
    (await env.repo.getSystemDefaults()).limits.map((l) => l.calendar),
    [null, { period: "month", timeZone: "UTC" }],
  );
});

Deno.test("a zoned day quota turns at local midnight across the DST change (injected clock), with cascade", async () => {
  const zone = "America/New_York";
  // 8 March 2026: clocks spring forward; the day has 23 hours.
  const day = calendarWindow(Date.UTC(2026, 2, 8, 15), {
    period: "day",
    timeZone: zone,
  });
  const clock = manualClock(day.end - 60_000);
  await using env = await freshRepo({ clock });
  await env.repo.createEntity("org", {});
  await env.repo.createEntity("user", { parentId: "org", cascade: true });
  await env.repo.setLimits("user", [
    Limit.perCalendar("usd", 10, { period: "day", timeZone: zone }),
  ]);
  await env.repo.setLimits("org", [
    Limit.perCalendar("usd", 4, { period: "day", timeZone: zone }),
  ]);
  const limiter = new RateLimiter(env.repo);
  const ask = { entityId: "user", resource: "api" };
  await limiter.acquire({ ...ask, consume: { usd: 4 } }, () => {});
  await assert.rejects(
    limiter.acquire({ ...ask, consume: { usd: 1 } }),
    RateLimitExceeded,
  );
  assert.equal((await bucket(env, "user"))["b_usd_tc"], "4000");
  clock.advance(60_000); // local midnight of 9 March
  await limiter.acquire({ ...ask, consume: { usd: 3 } }, () => {});
  const org = await bucket(env, "org");
  assert.equal(org["b_usd_tk"], "1000");
  assert.equal(org["b_usd_ws"], String(day.end));
  assert.equal(
    Number(org["b_usd_we"]) - day.end,
    24 * 3_600_000,
  );
  const user = await bucket(env, "user");
  assert.equal(user["b_usd_tk"], "7000");
});

Deno.test("a calendar quota on the real clock: concurrent acquires from two limiters never exceed the window's quota", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([
    Limit.perSecond("rps", 1000),
    Limit.perCalendar("req", 12, { period: "day" }),
  ]);
  const window = calendarWindow(Date.now(), { period: "day", timeZone: "UTC" });
  // Not within a minute of midnight UTC (the window must not turn mid-test).
  if (window.end - Date.now() < 60_000) return;
  const limiters = [new RateLimiter(env.repo), new RateLimiter(env.repo)];
  let admitted = 0;
  let refused = 0;
  await Promise.all(
    Array.from(
      { length: 30 },
      (_, i) =>
        (limiters[i % 2] as RateLimiter).acquire({
          entityId: "k",
          resource: "api",
          consume: { rps: 1, req: 1 },
          timeoutMs: 20_000,
        }, () => {}).then(() => admitted++, (e) => {
          assert.ok(e instanceof RateLimitExceeded, String(e));
          refused++;
        }),
    ),
  );
  const b = await bucket(env, "k");
  assert.equal(admitted, 12);
  assert.equal(refused, 18);
  assert.equal(b["b_usd_tk"], undefined);
  const item = await env.repo.getEntityBuckets("k");
  const req = item[0]?.limits.get("req");
  assert.equal(req?.tk, 0n);
  assert.equal(req?.tc, 12_000n);
  assert.equal(req?.ws, BigInt(window.start));
  // The refused requests charged rps nothing (all or nothing).
  assert.equal(item[0]?.limits.get("rps")?.tc, 12_000n);
});
