import assert from "node:assert/strict";
import type { Clock } from "../core/clock.ts";
import type { Item } from "../core/expr.ts";
import { compareVersions } from "../core/version.ts";
import {
  createCapacityBudget,
  createWritePool,
  forEachConcurrent,
  forEachPooled,
  itemSizeBytes,
  UNPACED_MEASURE_EVERY,
  utf8Length,
} from "../migrations/_dynamo.ts";
import {
  legacyEntityItems,
  legacyLimitItem,
  legacySystemItems,
  seededRandom,
} from "./_fixtures/legacy_items.ts";
import {
  createMigrationContext,
  EMPTY_REPORT,
  type Migration,
  type MigrationEvent,
} from "../migrations/migration.ts";
import {
  createProgressReporter,
  estimateProgress,
  formatDuration,
  formatProgress,
  type ProgressSnapshot,
} from "../migrations/progress.ts";
import {
  createRegistry,
  findMigration,
  getMigrations,
  MIGRATIONS,
  migrationsBetween,
} from "../migrations/registry.ts";
import { recoveryPlan } from "../migrations/runner.ts";
import { groupLegacyLimits } from "../migrations/v0_8_0_composite_configs.ts";
import {
  classifyRecord,
  estimateWriteUnits,
  planItemCopy,
} from "../migrations/v0_10_0_namespace_keys.ts";

/** A clock whose sleep jumps time forward at once. */
function jumpClock(start = 1_000_000): Clock & { slept: number[] } {
  let t = start;
  const slept: number[] = [];
  return {
    slept,
    now: () => t,
    sleep(ms: number, signal?: AbortSignal): Promise<void> {
      signal?.throwIfAborted();
      slept.push(ms);
      t += ms;
      return Promise.resolve();
    },
  };
}

const offline = {
  send: (): Promise<never> => Promise.reject(new Error("offline")),
};

function fakeMigration(id: string, version: string): Migration {
  return {
    id,
    version,
    description: id,
    reversible: false,
    apply: () => Promise.resolve(EMPTY_REPORT),
  };
}

// ---------------------------------------------------------------- registry

Deno.test("MIGRATIONS lists the built-ins in semver order", () => {
  assert.deepEqual(MIGRATIONS.map((m) => m.id), [
    "0.8.0-composite-configs",
    "0.9.0-bucket-pks",
    "0.10.0-lsis",
    "0.10.0-namespace-keys",
  ]);
  for (let i = 1; i < MIGRATIONS.length; i++) {
    const a = MIGRATIONS[i - 1] as Migration;
    const b = MIGRATIONS[i] as Migration;
    assert.ok(compareVersions(a.version, b.version) <= 0);
  }
  assert.ok(MIGRATIONS.every((m) => m.reversible === false));
  assert.ok(Object.isFrozen(MIGRATIONS));
});

Deno.test("createRegistry() sorts numerically and keeps declared order within a version", () => {
  const reg = createRegistry([
    fakeMigration("b", "0.10.0"),
    fakeMigration("a", "0.9.0"),
    fakeMigration("c", "0.10.0"),
    fakeMigration("d", "0.2.0"),
  ]);
  assert.deepEqual(reg.map((m) => m.id), ["d", "a", "b", "c"]);
});

Deno.test("createRegistry() refuses duplicate ids and bad versions", () => {
  assert.throws(
    () =>
      createRegistry([
        fakeMigration("x", "1.0.0"),
        fakeMigration("x", "1.1.0"),
      ]),
    TypeError,
  );
  assert.throws(() => createRegistry([fakeMigration("y", "1.2")]), SyntaxError);
});

Deno.test("migrationsBetween() returns from < version <= to", () => {
  const ids = (from: string, to: string): string[] =>
    migrationsBetween(from, to).map((m) => m.id);
  assert.deepEqual(ids("0.9.0", "1.0.0"), [
    "0.10.0-lsis",
    "0.10.0-namespace-keys",
  ]);
  assert.deepEqual(ids("0.7.0", "0.10.0"), MIGRATIONS.map((m) => m.id));
  assert.deepEqual(ids("0.8.0", "0.9.0"), ["0.9.0-bucket-pks"]);
  assert.deepEqual(ids("0.10.0", "0.10.0"), []);
  assert.deepEqual(ids("0.10.0", "0.8.0"), []);
  assert.deepEqual(ids("v0.7.5", "0.8.0"), ["0.8.0-composite-configs"]);
  assert.throws(() => migrationsBetween("x", "1.0.0"), SyntaxError);
});

Deno.test("migrationsBetween() uses an injected registry", () => {
  const registry = createRegistry([fakeMigration("one", "1.0.0")]);
  assert.deepEqual(
    migrationsBetween("0.1.0", "2.0.0", { registry }).map((m) => m.id),
    ["one"],
  );
  assert.equal(findMigration("one", { registry })?.version, "1.0.0");
  assert.equal(findMigration("one"), undefined);
});

Deno.test("getMigrations() returns a copy", () => {
  const copy = getMigrations();
  copy.pop();
  assert.equal(MIGRATIONS.length, 4);
});

// ---------------------------------------------------------------- context

Deno.test("createMigrationContext() fills defaults and validates ranges", () => {
  const ctx = createMigrationContext({ client: offline, tableName: "t" });
  assert.deepEqual(ctx.options, {
    delete: false,
    segments: 4,
    maxWcuPerSecond: null,
    maxRcuPerSecond: null,
    writeConcurrency: 8,
    pageSize: 500,
    namespace: "default",
    registerNamespace: true,
    restart: false,
    overwriteDrift: false,
  });
  assert.equal(ctx.signal.aborted, false);
  assert.throws(
    () =>
      createMigrationContext({ client: offline, tableName: "t", segments: 0 }),
    RangeError,
  );
  assert.throws(
    () =>
      createMigrationContext({
        client: offline,
        tableName: "t",
        maxWcuPerSecond: -1,
      }),
    RangeError,
  );
  assert.throws(
    () =>
      createMigrationContext({
        client: offline,
        tableName: "t",
        pageSize: 1.5,
      }),
    RangeError,
  );
  assert.throws(
    () => createMigrationContext({ client: offline, tableName: "" }),
    TypeError,
  );
});

// ---------------------------------------------------------------- namespace keys (pure)

Deno.test("classifyRecord() tells every legacy record type apart", () => {
  const cases: [string, string, string][] = [
    ["ENTITY#u1", "#META", "entity"],
    ["ENTITY#u1", "#CONFIG#openai/gpt-4", "config"],
    ["ENTITY#u1", "#CONFIG#_default_", "config"],
    ["ENTITY#u1", "#BUCKET#openai/gpt-4", "bucket_pre_0_9"],
    ["ENTITY#u1", "#USAGE#api#2026-01-15T11:00:00Z", "usage"],
    ["ENTITY#u1", "#LIMIT#api#rpm", "legacy_limit"],
    ["BUCKET#u1#openai/gpt-4#0", "#STATE", "bucket"],
    ["AUDIT#u1", "#AUDIT#01HX", "audit"],
    ["SYSTEM#", "#VERSION", "version"],
    ["SYSTEM#", "#CONFIG", "config"],
    ["SYSTEM#", "#RESOURCES", "registry"],
    ["SYSTEM#", "#ENTITY_CONFIG_RESOURCES", "registry"],
    ["SYSTEM#", "#PROVISIONER", "registry"],
    ["RESOURCE#openai/gpt-4", "#CONFIG", "config"],
    ["RESOURCE#api", "#LIMIT#rpm", "legacy_limit"],
    ["WHATEVER", "#X", "other"],
  ];
  for (const [pk, sk, type] of cases) {
    assert.equal(classifyRecord(pk, sk), type, `${pk} ${sk}`);
  }
});

Deno.test("planItemCopy() prefixes PK and GSI hash keys and adds GSI4", () => {
  const items = legacyEntityItems({
    id: "u1",
    parentId: "org/1",
    resources: ["openai/gpt-4"],
    preV09Bucket: true,
  });
  const ns = "Ab3_xYz-901";
  const byKey = new Map(
    items.map((i) => [`${i["PK"]?.S} ${i["SK"]?.S}`, planItemCopy(i, ns)]),
  );
  const meta = byKey.get("ENTITY#u1 #META");
  assert.equal(meta?.kind, "copy");
  if (meta?.kind === "copy") {
    assert.equal(meta.item["PK"]?.S, `${ns}/ENTITY#u1`);
    assert.equal(meta.item["SK"]?.S, "#META");
    assert.equal(meta.item["GSI1PK"]?.S, `${ns}/PARENT#org/1`);
    assert.equal(meta.item["GSI1SK"]?.S, "CHILD#u1");
    assert.equal(meta.item["GSI4PK"]?.S, ns);
    assert.equal(meta.item["GSI4SK"]?.S, `${ns}/ENTITY#u1`);
    assert.equal(meta.item["entity_id"]?.S, "u1");
  }
  const bucket = byKey.get("BUCKET#u1#openai/gpt-4#0 #STATE");
  assert.equal(bucket?.kind, "copy");
  if (bucket?.kind === "copy") {
    assert.equal(bucket.item["PK"]?.S, `${ns}/BUCKET#u1#openai/gpt-4#0`);
    assert.equal(bucket.item["GSI2PK"]?.S, `${ns}/RESOURCE#openai/gpt-4`);
    assert.equal(bucket.item["GSI2SK"]?.S, "BUCKET#u1#0");
    assert.equal(bucket.item["GSI3PK"]?.S, `${ns}/ENTITY#u1`);
    assert.equal(bucket.item["GSI3SK"]?.S, "BUCKET#openai/gpt-4#0");
    assert.equal(bucket.item["GSI4SK"]?.S, "BUCKET#u1#openai/gpt-4#0");
  }
  const config = byKey.get("ENTITY#u1 #CONFIG#openai/gpt-4");
  assert.ok(config?.kind === "copy");
  assert.equal(config.item["GSI3PK"]?.S, `${ns}/ENTITY_CONFIG#openai/gpt-4`);
  assert.deepEqual(byKey.get("ENTITY#u1 #BUCKET#openai/gpt-4"), {
    kind: "skip",
    type: "bucket_pre_0_9",
    reason: "orphaned_bucket",
  });
});

Deno.test("planItemCopy() sends the version record to the reserved namespace", () => {
  const version = legacySystemItems().find((i) => i["SK"]?.S === "#VERSION");
  assert.ok(version);
  const d = planItemCopy(version, "nsid");
  assert.ok(d.kind === "copy");
  assert.equal(d.type, "version");
  assert.equal(d.item["PK"]?.S, "_/SYSTEM#");
  assert.equal(d.item["GSI4PK"]?.S, "_");
  assert.equal(d.item["GSI4SK"]?.S, "_/SYSTEM#");
  assert.equal(d.item["schema_version"]?.S, "0.9.0");
});

Deno.test("planItemCopy() treats a resource with '/' as unprefixed and skips prefixed keys", () => {
  const legacy: Item = {
    PK: { S: "RESOURCE#openai/gpt-4" },
    SK: { S: "#CONFIG" },
  };
  const d = planItemCopy(legacy, "ns1");
  assert.ok(d.kind === "copy");
  assert.equal(d.item["PK"]?.S, "ns1/RESOURCE#openai/gpt-4");
  const prefixed: Item = {
    PK: { S: "ns1/RESOURCE#openai/gpt-4" },
    SK: { S: "#CONFIG" },
  };
  assert.deepEqual(planItemCopy(prefixed, "ns1"), {
    kind: "skip",
    type: null,
    reason: "already_prefixed",
  });
  // A GSI key that is already prefixed is not prefixed twice.
  const mixed: Item = {
    PK: { S: "ENTITY#u1" },
    SK: { S: "#META" },
    GSI1PK: { S: "ns1/PARENT#p" },
    GSI1SK: { S: "CHILD#u1" },
  };
  const m = planItemCopy(mixed, "ns1");
  assert.ok(m.kind === "copy");
  assert.equal(m.item["GSI1PK"]?.S, "ns1/PARENT#p");
});

Deno.test("planItemCopy() does not modify its input", () => {
  const item: Item = { PK: { S: "AUDIT#u1" }, SK: { S: "#AUDIT#1" } };
  const before = structuredClone(item);
  planItemCopy(item, "ns");
  assert.deepEqual(item, before);
});

Deno.test("estimateWriteUnits() counts the item and its index entries", () => {
  assert.equal(estimateWriteUnits({ PK: { S: "a" }, SK: { S: "b" } }), 1);
  const withGsis: Item = {
    PK: { S: "a" },
    SK: { S: "b" },
    GSI1PK: { S: "x" },
    GSI1SK: { S: "y" },
    GSI3PK: { S: "x" },
    GSI3SK: { S: "y" },
    GSI4PK: { S: "x" },
    GSI4SK: { S: "y" },
  };
  assert.equal(estimateWriteUnits(withGsis), 4);
  const big: Item = {
    PK: { S: "a" },
    SK: { S: "b" },
    blob: { S: "x".repeat(3000) },
  };
  assert.equal(estimateWriteUnits(big), 3);
});

Deno.test("itemSizeBytes() sums names and values", () => {
  assert.equal(itemSizeBytes({ PK: { S: "abc" } }), 5);
  assert.equal(itemSizeBytes({ ok: { BOOL: true } }), 3);
  assert.equal(itemSizeBytes({ n: { N: "12345" } }), 1 + 4);
  assert.ok(itemSizeBytes({ m: { M: { a: { S: "b" } } } }) > 3);
});

Deno.test("utf8Length() equals the encoded length, surrogates included", () => {
  const random = seededRandom(7);
  const samples = [
    "",
    "ENTITY#u1",
    "caf\u00e9",
    "\u20ac100",
    "\u{1F600}x",
    "a\ud800b", // lone high surrogate: U+FFFD
    "\udc00", // lone low surrogate
    "\ud800", // high surrogate at the end
  ];
  for (let i = 0; i < 200; i++) {
    const codes = Array.from(
      { length: 1 + Math.floor(random() * 12) },
      () => Math.floor(random() * 0x10000),
    );
    samples.push(String.fromCharCode(...codes));
  }
  const encoder = new TextEncoder();
  for (const s of samples) {
    assert.equal(utf8Length(s), encoder.encode(s).length, JSON.stringify(s));
  }
});

// ---------------------------------------------------------------- 0.8.0 (pure)

Deno.test("groupLegacyLimits() turns burst into capacity and groups by config item", () => {
  const groups = groupLegacyLimits([
    legacyLimitItem({
      pk: "SYSTEM#",
      name: "rpm",
      capacity: 100,
      burst: 150,
      refillAmount: 100,
      refillPeriodSeconds: 60,
    }),
    legacyLimitItem({
      pk: "SYSTEM#",
      name: "tpm",
      capacity: 1000,
      refillAmount: 1000,
      refillPeriodSeconds: 60,
    }),
    legacyLimitItem({
      pk: "RESOURCE#openai/gpt-4",
      name: "rpm",
      capacity: 5,
      refillAmount: 5,
      refillPeriodSeconds: 1,
    }),
    legacyLimitItem({
      pk: "ENTITY#u1",
      resource: "openai/gpt-4",
      name: "rpm",
      capacity: 7,
      burst: 9,
      refillAmount: 7,
      refillPeriodSeconds: 60,
    }),
    {
      PK: { S: "SYSTEM#" },
      SK: { S: "#LIMIT#nameless" },
      capacity: { N: "1" },
    },
    { PK: { S: "ENTITY#u1" }, SK: { S: "#META" } },
  ]);
  const by = new Map(groups.map((g) => [`${g.pk} ${g.sk}`, g]));
  assert.equal(groups.length, 3);
  assert.deepEqual(by.get("SYSTEM# #CONFIG")?.limits, [
    {
      name: "rpm",
      capacity: "150",
      refillAmount: "100",
      refillPeriodSeconds: "60",
    },
    {
      name: "tpm",
      capacity: "1000",
      refillAmount: "1000",
      refillPeriodSeconds: "60",
    },
  ]);
  assert.equal(by.get("SYSTEM# #CONFIG")?.oldKeys.length, 2);
  assert.equal(
    by.get("RESOURCE#openai/gpt-4 #CONFIG")?.resource,
    "openai/gpt-4",
  );
  const entity = by.get("ENTITY#u1 #CONFIG#openai/gpt-4");
  assert.equal(entity?.level, "entity");
  assert.equal(entity?.entityId, "u1");
  assert.equal(entity?.limits[0]?.capacity, "9");
});

Deno.test("groupLegacyLimits() keeps a namespace prefix instead of inventing one", () => {
  const [g] = groupLegacyLimits([
    legacyLimitItem({
      pk: "ns1/ENTITY#u1",
      resource: "api",
      name: "rpm",
      capacity: 1,
      refillAmount: 1,
      refillPeriodSeconds: 1,
    }),
  ]);
  assert.equal(g?.prefix, "ns1/");
  assert.equal(g?.sk, "#CONFIG#api");
});

// ---------------------------------------------------------------- progress

function snap(p: Partial<ProgressSnapshot>): ProgressSnapshot {
  return {
    phase: "copy",
    scanned: 0,
    baseline: 0,
    total: 1000,
    written: 0,
    alreadyPresent: 0,
    deleted: 0,
    segmentsDone: 0,
    segments: 4,
    consumedWcu: 0,
    consumedRcu: 0,
    startedAt: 0,
    now: 0,
    ...p,
  };
}

Deno.test("estimateProgress() derives rate and ETA from this run only", () => {
  const e = estimateProgress(
    snap({ scanned: 600, baseline: 400, now: 10_000 }),
  );
  assert.equal(e.itemsPerSecond, 20);
  assert.equal(e.fraction, 0.6);
  assert.equal(e.etaMs, 20_000);
  assert.equal(estimateProgress(snap({ now: 0 })).etaMs, null);
});

Deno.test("estimateProgress() caps a stale item count below 100% until all segments finish", () => {
  assert.equal(
    estimateProgress(snap({ scanned: 2000, now: 1000 })).fraction,
    0.999,
  );
  assert.equal(
    estimateProgress(snap({ scanned: 2000, segmentsDone: 4, now: 1000 }))
      .fraction,
    1,
  );
  assert.equal(
    estimateProgress(snap({ total: null, segmentsDone: 1, now: 1000 }))
      .fraction,
    0.25,
  );
});

Deno.test("formatProgress() renders a bar for a terminal and a line for logs", () => {
  const s = snap({
    scanned: 500,
    written: 450,
    alreadyPresent: 50,
    consumedWcu: 900,
    now: 10_000,
  });
  assert.equal(
    formatProgress(s, { mode: "tty", barWidth: 10 }),
    "copy [#####-----]  50.0% 500/1,000 items | written 450 | present 50 | deleted 0 | segments 0/4 | 90.0 WCU/s | ETA 10s",
  );
  assert.equal(
    formatProgress(s, { mode: "plain" }),
    "copy 50.0% 500/1,000 items written 450 present 50 deleted 0 segments 0/4 90.0 WCU/s ETA 10s",
  );
  assert.match(
    formatProgress(snap({ total: null }), { mode: "plain" }),
    /ETA \?/,
  );
});

Deno.test("formatDuration() picks hours, minutes or seconds", () => {
  assert.equal(formatDuration(9_000), "9s");
  assert.equal(formatDuration(125_000), "2m05s");
  assert.equal(formatDuration(3_720_000), "1h02m");
});

Deno.test("createProgressReporter() throttles progress lines and always writes the final one", () => {
  let now = 0;
  const out: string[] = [];
  const report = createProgressReporter({
    write: (t) => out.push(t),
    tty: false,
    clock: { now: () => now },
    minIntervalMs: 1000,
  });
  const progress = (p: Partial<ProgressSnapshot>): MigrationEvent => ({
    kind: "progress",
    migration: "m",
    snapshot: snap(p),
  });
  report(progress({ scanned: 1 }));
  now = 500;
  report(progress({ scanned: 2 }));
  now = 1500;
  report(progress({ scanned: 3 }));
  now = 1600;
  report(progress({ scanned: 4, segmentsDone: 4 }));
  assert.equal(out.length, 3);
  assert.ok(out.every((l) => l.endsWith("\n")));
  assert.match(out[2] ?? "", /^copy 100\.0% 4\/1,000/);
});

Deno.test("createProgressReporter() rewrites one terminal line and closes it before logs", () => {
  const out: string[] = [];
  const report = createProgressReporter({
    write: (t) => out.push(t),
    tty: true,
    clock: { now: () => 0 },
    minIntervalMs: 0,
  });
  report({ kind: "progress", migration: "m", snapshot: snap({ scanned: 1 }) });
  report({ kind: "progress", migration: "m", snapshot: snap({ scanned: 2 }) });
  report({ kind: "log", level: "info", migration: null, message: "hello" });
  assert.ok(out[0]?.startsWith("\r\x1b[2Kcopy ["));
  assert.ok(out[1]?.startsWith("\r\x1b[2Kcopy ["));
  assert.equal(out[2], "\n");
  assert.equal(out[3], "hello\n");
});

// ---------------------------------------------------------------- throttle and concurrency

Deno.test("createCapacityBudget() paces spending to the rate", async () => {
  const clock = jumpClock();
  const budget = createCapacityBudget(10, clock);
  const signal = new AbortController().signal;
  const start = clock.now();
  for (let i = 0; i < 30; i++) await budget.take(1, signal);
  // The first 10 units are the one-second burst; 20 more take 2 s.
  const elapsed = clock.now() - start;
  assert.ok(elapsed >= 1900 && elapsed <= 2100, `elapsed ${elapsed}`);
  assert.equal(budget.spent(), 30);
});

Deno.test("createCapacityBudget() charges measured capacity after the fact", async () => {
  const clock = jumpClock();
  const budget = createCapacityBudget(10, clock);
  const signal = new AbortController().signal;
  await budget.take(1, signal);
  budget.adjust(19); // the write really cost 20 WCU
  const before = clock.now();
  await budget.take(1, signal);
  assert.ok(clock.now() - before >= 1000, "the debt is waited off");
  assert.equal(budget.spent(), 21);
});

Deno.test("createCapacityBudget() without a rate never waits", async () => {
  const clock = jumpClock();
  const budget = createCapacityBudget(null, clock);
  for (let i = 0; i < 100; i++) {
    await budget.take(5, new AbortController().signal);
  }
  assert.equal(clock.slept.length, 0);
  assert.equal(budget.spent(), 500);
});

Deno.test("createCapacityBudget() with a rate measures every call", () => {
  const budget = createCapacityBudget(10, jumpClock());
  for (let i = 0; i < 3 * UNPACED_MEASURE_EVERY; i++) {
    assert.equal(budget.shouldMeasure(), true);
  }
});

Deno.test("createCapacityBudget() without a rate measures a sample and extrapolates it", async () => {
  const budget = createCapacityBudget(null, jumpClock());
  const signal = new AbortController().signal;
  const calls = 4 * UNPACED_MEASURE_EVERY;
  let measured = 0;
  for (let i = 0; i < calls; i++) {
    await budget.take(2, signal);
    // Every write really costs 3 units (the estimate says 2).
    if (budget.shouldMeasure()) {
      measured++;
      budget.settle(2, 3);
    } else budget.settle(2, null);
  }
  assert.equal(measured, 4, "the first call and one in UNPACED_MEASURE_EVERY");
  assert.equal(budget.spent(), 3 * calls);
});

Deno.test("createCapacityBudget() keeps the estimate until a call is measured", async () => {
  const budget = createCapacityBudget(null, jumpClock());
  const signal = new AbortController().signal;
  await budget.take(2, signal);
  budget.settle(2, null);
  assert.equal(budget.spent(), 2);
});

Deno.test("createCapacityBudget() stops waiting on abort", async () => {
  const clock = jumpClock();
  const budget = createCapacityBudget(1, clock);
  const c = new AbortController();
  await budget.take(1, c.signal);
  c.abort(new Error("stop"));
  await assert.rejects(budget.take(1, c.signal), { message: "stop" });
});

Deno.test("forEachConcurrent() caps concurrency and visits every item", async () => {
  let inFlight = 0;
  let peak = 0;
  const seen: number[] = [];
  await forEachConcurrent(
    Array.from({ length: 20 }, (_, i) => i),
    3,
    new AbortController().signal,
    async (i) => {
      inFlight++;
      peak = Math.max(peak, inFlight);
      await Promise.resolve();
      seen.push(i);
      inFlight--;
    },
  );
  assert.equal(peak, 3);
  assert.deepEqual(
    seen.sort((a, b) => a - b),
    Array.from({ length: 20 }, (_, i) => i),
  );
});

Deno.test("forEachConcurrent() stops on the first failure after in-flight calls settle", async () => {
  let started = 0;
  let finished = 0;
  await assert.rejects(
    forEachConcurrent(
      [1, 2, 3, 4, 5, 6],
      2,
      new AbortController().signal,
      async (i) => {
        started++;
        await Promise.resolve();
        if (i === 2) throw new Error("boom");
        finished++;
      },
    ),
    { message: "boom" },
  );
  assert.ok(started < 6);
  assert.equal(finished, started - 1);
});

Deno.test("createWritePool() shares one cap between callers, halves it on throttling and grows it back", async () => {
  const pool = createWritePool(8);
  let inFlight = 0;
  let peak = 0;
  const signal = new AbortController().signal;
  const body = async (): Promise<void> => {
    peak = Math.max(peak, ++inFlight);
    await Promise.resolve();
    inFlight--;
  };
  const task = () => pool.run(signal, body);
  // Two "segments" feeding the same pool never exceed its cap together.
  await Promise.all([
    forEachPooled(Array.from({ length: 30 }), pool, signal, body),
    forEachPooled(Array.from({ length: 30 }), pool, signal, body),
  ]);
  assert.equal(peak, 8);
  pool.throttled();
  assert.equal(pool.limit(), 4);
  pool.throttled();
  pool.throttled();
  pool.throttled();
  assert.equal(pool.limit(), 1);
  // Each `limit()` successes in a row add one.
  for (let i = 0; i < 1 + 2 + 3; i++) await task();
  assert.equal(pool.limit(), 4);
  assert.equal(pool.inFlight(), 0);
});

Deno.test("forEachPooled() stops the items not started after a failure and rethrows it", async () => {
  const pool = createWritePool(2);
  let started = 0;
  await assert.rejects(
    forEachPooled(
      [1, 2, 3, 4, 5, 6],
      pool,
      new AbortController().signal,
      async (i) => {
        started++;
        await Promise.resolve();
        if (i === 1) throw new Error("boom");
      },
    ),
    { message: "boom" },
  );
  assert.ok(started < 6, `started ${started}`);
  assert.equal(pool.inFlight(), 0);
});

Deno.test("forEachConcurrent() stops starting work once aborted", async () => {
  const c = new AbortController();
  let calls = 0;
  await assert.rejects(
    forEachConcurrent([1, 2, 3, 4], 1, c.signal, (i) => {
      calls++;
      if (i === 2) c.abort(new Error("aborted"));
      return Promise.resolve();
    }),
    { message: "aborted" },
  );
  assert.equal(calls, 2);
});

// ---------------------------------------------------------------- recovery and fixtures

Deno.test("recoveryPlan() gives exact PITR and backup commands, and the downgrade path while originals exist", () => {
  const blockers = [{
    id: "0.10.0-namespace-keys",
    version: "0.10.0",
    description: "",
    reversible: false,
  }];
  const kept = recoveryPlan({
    table: "my-app",
    region: "us-east-1",
    to: "0.9.0",
    blockers,
    startedAt: "2026-01-15T12:00:00Z",
    originalsPresent: true,
  });
  assert.deepEqual(kept.options.map((o) => o.kind), [
    "downgrade",
    "pitr",
    "backup",
  ]);
  assert.deepEqual(kept.options[1]?.commands, [
    "zae-limiter pitr restore --name my-app --region us-east-1 --time 2026-01-15T11:59:00Z --target-table my-app-restored",
    "zae-limiter check --name my-app-restored --region us-east-1",
  ]);
  assert.ok(
    kept.options[2]?.commands.includes(
      "zae-limiter backup restore --name my-app --region us-east-1 --backup-arn <BACKUP_ARN> --target-table my-app-restored",
    ),
  );
  const gone = recoveryPlan({
    table: "my-app",
    region: "<REGION>",
    to: "0.9.0",
    blockers,
    startedAt: null,
    originalsPresent: false,
  });
  assert.deepEqual(gone.options.map((o) => o.kind), ["pitr", "backup"]);
  assert.equal(gone.restoreBefore, null);
  assert.match(gone.summary, /cannot be undone/);
});

Deno.test("legacyEntityItems() is deterministic for a seed", () => {
  const a = legacyEntityItems({
    id: "u",
    resources: ["a/b"],
    random: seededRandom(7),
  });
  const b = legacyEntityItems({
    id: "u",
    resources: ["a/b"],
    random: seededRandom(7),
  });
  assert.deepEqual(a, b);
  assert.ok(
    a.every((i) =>
      !(i["PK"]?.S ?? "").includes("/") ||
      (i["PK"]?.S ?? "").indexOf("#") < (i["PK"]?.S ?? "").indexOf("/")
    ),
  );
});
