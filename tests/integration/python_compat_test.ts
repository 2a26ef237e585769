/**
 * A Python 0.10 client on the same table still reads every entity, limit
 * and bucket written with shadow mode and calendar quotas (issue 14). There
 * is no Python here: every item of the table is read with the spec's 0.10
 * reader (`tests/_py010_reader.ts`, itself checked against the hand-written
 * reference items), which requires the 0.10 attributes with their types
 * and allows only the declared new attributes.
 */
import assert from "node:assert/strict";
import { ScanCommand } from "@aws-sdk/client-dynamodb";
import { Limit, RateLimiter, RateLimitExceeded } from "../../mod.ts";
import { readItem } from "../_py010_reader.ts";
import { freshRepo, manualClock } from "./_harness.ts";

/** The attributes shadow mode and calendar quotas add (README). */
const NEW_ATTRIBUTES = {
  config: ["sh", "cal", "tz"],
  bucket: ["ws", "we"],
} as const;

Deno.test("every item written with shadow limits and calendar quotas reads under the 0.10 rules, with only the new attributes added", async () => {
  const clock = manualClock(Date.UTC(2026, 2, 31, 20));
  await using env = await freshRepo({ clock });
  const { repo } = env;
  await repo.setSystemDefaults([
    Limit.perMinute("rpm", 100),
    Limit.perMinute("tpm", 10_000).withShadow(),
    Limit.perCalendar("usd", 50_00, { period: "month" }),
  ], { onUnavailable: "block" });
  await repo.setResourceDefaults("gpt-4", [
    Limit.perMinute("rpm", 50),
    Limit.perCalendar("usd", 10_00, {
      period: "week",
      timeZone: "Europe/Berlin",
      shadow: true,
    }),
  ]);
  await repo.createEntity("org", { name: "Org" });
  await repo.createEntity("user", { parentId: "org", cascade: true });
  await repo.setLimits("user", [
    Limit.perMinute("rpm", 20),
    Limit.perCalendar("usd", 5_00, {
      period: "day",
      timeZone: "America/New_York",
    }),
  ], { resource: "gpt-4" });
  const limiter = new RateLimiter(repo);
  const ask = { entityId: "user", resource: "gpt-4" };
  await limiter.acquire(
    { ...ask, consume: { rpm: 1, usd: 1_00 } },
    (l) => l.adjust({ usd: 50 }),
  );
  await limiter.acquire({ ...ask, consume: { rpm: 1, usd: 4_00 } }, () => {
    throw new Error("rolled back");
  }).catch(() => {});
  await limiter.acquire({
    ...ask,
    consume: { rpm: 1, usd: 1 },
    shadow: ["rpm"],
  }, () => {});
  await limiter.acquire({
    entityId: "solo",
    resource: "api",
    consume: { rpm: 1, tpm: 20_000, usd: 10_00 },
  }, () => {});
  // The month turns (UTC): the next write resets the window.
  clock.advance(4 * 3_600_000);
  await limiter.acquire({
    entityId: "solo",
    resource: "api",
    consume: { rpm: 1, usd: 50_00 },
  }, () => {});
  await assert.rejects(
    limiter.acquire({ entityId: "solo", resource: "api", consume: { usd: 1 } }),
    RateLimitExceeded,
  );

  const items = (await env.client.send(
    new ScanCommand({ TableName: repo.tableName, ConsistentRead: true }),
  )).Items ?? [];
  const seen = new Set<string>();
  const byType = new Map<string, number>();
  for (const item of items) {
    const r = readItem(item, NEW_ATTRIBUTES);
    assert.deepEqual(r.issues, [], `${item["PK"]?.S} ${item["SK"]?.S}`);
    byType.set(r.type, (byType.get(r.type) ?? 0) + 1);
    for (const a of r.extensions) seen.add(a.slice(a.lastIndexOf("_") + 1));
    // A calendar quota reads as a valid rolling limit: its amount per the
    // longest period (what a Python client charges it as).
    if (r.type === "system_config") {
      assert.deepEqual(r.limits["usd"], { cp: 5000, ra: 5000, rp: 2_678_400 });
    }
    if (r.type === "bucket" && item["PK"]?.S?.includes("BUCKET#solo#")) {
      assert.deepEqual(r.limits["usd"], {
        cp: 5_000_000,
        ra: 5_000_000,
        rp: 2_678_400_000,
      });
    }
  }
  // Every record type the features touch was read, and every new attribute was written.
  for (
    const t of [
      "bucket",
      "system_config",
      "resource_config",
      "entity_config",
      "entity",
      "audit",
    ]
  ) assert.ok((byType.get(t) ?? 0) > 0, `no ${t} item`);
  assert.equal(byType.get("bucket"), 3); // user, org, solo
  assert.deepEqual([...seen].sort(), ["cal", "sh", "tz", "we", "ws"]);
});

Deno.test("concurrency slots are a NEW item type a 0.10 reader does not recognise and no 0.10 query returns; every other item reads under the 0.10 rules with no new attribute", async () => {
  await using env = await freshRepo();
  const { repo } = env;
  await repo.setSystemDefaults([
    Limit.perMinute("rpm", 100),
    Limit.perMinute("tpm", 10_000),
  ], { onUnavailable: "block" });
  await repo.createEntity("org", { name: "Org" });
  await repo.createEntity("user", { parentId: "org", cascade: true });
  const limiter = new RateLimiter(repo, { maxHoldMs: 60_000 });
  const concurrency = [
    Limit.concurrent("inflight", 4, { leaseMs: 30_000 }),
    Limit.concurrent("streams", 1, { leaseMs: 30_000 }),
  ];
  const held = await limiter.acquire({
    entityId: "user",
    resource: "gpt-4",
    consume: { rpm: 1, tpm: 500 },
    concurrency,
  });
  await limiter.acquire({
    entityId: "user",
    resource: "gpt-4",
    consume: { rpm: 1 },
    concurrency: [concurrency[0] as (typeof concurrency)[0]],
  }, (l) => l.adjust({ rpm: 1 }));
  held.adjust({ tpm: -200 });
  // A crashed holder: its slot and its charge stay.
  await limiter.acquire({
    entityId: "solo",
    resource: "api",
    consume: { rpm: 1 },
    concurrency,
  });

  const items = (await env.client.send(
    new ScanCommand({ TableName: repo.tableName, ConsistentRead: true }),
  )).Items ?? [];
  const slotItems = items.filter((i) =>
    /\/CONCURRENCY#/.test(i["PK"]?.S ?? "")
  );
  assert.equal(slotItems.length, 4); // user and solo, two limits each
  for (const item of items) {
    const r = readItem(item, { config: [], bucket: [] });
    if (/\/CONCURRENCY#/.test(item["PK"]?.S ?? "")) {
      // Not a 0.10 record type, and on no index a 0.10 query reads.
      assert.equal(r.type, "unknown");
      assert.ok(!Object.keys(item).some((k) => k.startsWith("GSI")));
      assert.match(item["SK"]?.S ?? "", /^#SLOTS#(inflight|streams)$/);
      continue;
    }
    assert.deepEqual(r.issues, [], `${item["PK"]?.S} ${item["SK"]?.S}`);
    assert.deepEqual(r.extensions, []);
  }
  await held.commit();
});
