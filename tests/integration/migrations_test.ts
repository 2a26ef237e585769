import assert from "node:assert/strict";
import {
  DeleteItemCommand,
  DeleteTableCommand,
  type DynamoDBClient,
  PutItemCommand,
  ScanCommand,
} from "@aws-sdk/client-dynamodb";
import { decodeBucket } from "../../core/bucket_item.ts";
import type { Clock } from "../../core/clock.ts";
import { fromAttr, type Item, num, str } from "../../core/expr.ts";
import { isUnprefixedKey, parseLimitAttr } from "../../core/keys.ts";
import { Repository } from "../../core/repository.ts";
import {
  createTable,
  legacyEntityItems,
  legacyLimitItem,
  legacySystemItems,
  putItemsBatched,
  seededRandom,
  seedLegacyTable,
} from "../_fixtures/legacy_items.ts";
import {
  createMigrationContext,
  type Migration,
  type MigrationContext,
  type MigrationContextOptions,
  MigrationError,
  type MigrationEvent,
} from "../../migrations/migration.ts";
import { createRegistry, MIGRATIONS } from "../../migrations/registry.ts";
import {
  applyMigrations,
  migrationStatus,
  readLock,
  readStoredVersion,
  rollbackMigrations,
  withMigrationLock,
} from "../../migrations/runner.ts";
import { compositeConfigsMigration } from "../../migrations/v0_8_0_composite_configs.ts";
import {
  clearCopyCheckpoints,
  copyNamespaceKeys,
  deleteUnprefixedOriginals,
  namespaceKeysMigration,
  planItemCopy,
  planNamespaceKeys,
  verifyNamespaceKeys,
} from "../../migrations/v0_10_0_namespace_keys.ts";
import { UNPACED_MEASURE_EVERY } from "../../migrations/_dynamo.ts";
import { localClient, stopLocal, tableName } from "./_harness.ts";

// ---------------------------------------------------------------- fixtures

const RESOURCES = ["openai/gpt-4", "api", "anthropic/claude-3"];

/** Every pre-0.10 record type, resources with '/', parents, shards, a pre-0.9 bucket. */
function fixture(): Item[] {
  const random = seededRandom(42);
  return [
    ...legacySystemItems({
      schemaVersion: "0.9.0",
      resources: ["openai/gpt-4", "api"],
      entityConfigCounts: {
        "openai/gpt-4": 2,
        api: 13,
        "anthropic/claude-3": 1,
      },
    }),
    ...legacyEntityItems({
      id: "org-1",
      resources: ["openai/gpt-4"],
      shards: 2,
      random,
    }),
    ...legacyEntityItems({
      id: "u1",
      parentId: "org-1",
      cascade: true,
      resources: ["openai/gpt-4", "api"],
      preV09Bucket: true,
      auditEvents: 3,
      usageWindows: 2,
      random,
    }),
    ...legacyEntityItems({
      id: "u2",
      parentId: "org-1",
      resources: ["anthropic/claude-3"],
      random,
    }),
    ...legacyEntityItems({ id: "u3", auditEvents: 1, random }),
    ...Array.from(
      { length: 12 },
      (_, i) =>
        legacyEntityItems({ id: `bulk-${i}`, resources: ["api"], random }),
    ).flat(),
  ];
}

interface Env extends AsyncDisposable {
  readonly client: DynamoDBClient;
  readonly table: string;
  readonly calls: Awaited<ReturnType<typeof localClient>>["calls"];
  /** Called after every command completes (for abort injection). */
  afterCommand: ((name: string) => void) | null;
  ctx(options?: Partial<MigrationContextOptions>): MigrationContext;
}

async function legacyTable(items: readonly Item[]): Promise<Env> {
  const { client, calls } = await localClient();
  const table = tableName("mig");
  await createTable(client, table);
  await putItemsBatched(client, table, items);
  const env: Env = {
    client,
    table,
    calls,
    afterCommand: null,
    ctx: (options = {}) =>
      createMigrationContext({
        client,
        tableName: table,
        segments: 3,
        pageSize: 7,
        ...options,
      }),
    async [Symbol.asyncDispose]() {
      await client.send(new DeleteTableCommand({ TableName: table })).catch(
        () => {},
      );
      client.destroy();
    },
  };
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const out = await next(args);
      env.afterCommand?.(String(context.commandName ?? ""));
      return out;
    },
    { step: "initialize", name: "migrationTestHook" },
  );
  return env;
}

async function scanAll(env: Env): Promise<Item[]> {
  const out: Item[] = [];
  let start: Item | undefined;
  do {
    const res = await env.client.send(
      new ScanCommand({
        TableName: env.table,
        ConsistentRead: true,
        ...(start ? { ExclusiveStartKey: start } : {}),
      }),
    );
    out.push(...(res.Items ?? []));
    start = res.LastEvaluatedKey;
  } while (start);
  return out.sort((a, b) => {
    const ka = `${str(a, "PK")}\u0000${str(a, "SK")}`;
    const kb = `${str(b, "PK")}\u0000${str(b, "SK")}`;
    return ka < kb ? -1 : ka > kb ? 1 : 0;
  });
}

/** The table's data, comparable across tables: namespace ids replaced, bookkeeping and timestamps dropped. */
async function normalizedDump(env: Env): Promise<string[]> {
  const items = await scanAll(env);
  const ns = items.find((i) => str(i, "SK") === "#NAMESPACE#default");
  const id = ns ? str(ns, "namespace_id") ?? "" : "";
  return items
    .filter((i) => !(str(i, "SK") ?? "").startsWith("#MIGRATION"))
    .map((i) => {
      const copy: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(i)) {
        if (
          k === "updated_at" ||
          k === "created_at" && str(i, "PK") === "_/SYSTEM#"
        ) continue;
        copy[k] = fromAttr(v);
      }
      const text = canonical(copy);
      return id ? text.replaceAll(id, "<NS>") : text;
    })
    .sort();
}

function canonical(value: unknown): string {
  return JSON.stringify(
    value,
    (_k, v: unknown) =>
      v && typeof v === "object" && !Array.isArray(v)
        ? Object.fromEntries(
          Object.entries(v as Record<string, unknown>).sort(([a], [b]) =>
            a < b ? -1 : a > b ? 1 : 0
          ),
        )
        : v,
  );
}

function unprefixed(items: readonly Item[]): Item[] {
  return items.filter((i) => isUnprefixedKey(str(i, "PK") ?? ""));
}

function limitsOf(item: Item | undefined): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const attr of Object.keys(item ?? {})) {
    const p = parseLimitAttr(attr);
    if (!p || p.field !== "cp" || !item) continue;
    out[p.limitName] = [
      num(item, attr) ?? 0,
      num(item, `l_${p.limitName}_ra`) ?? 0,
      num(item, `l_${p.limitName}_rp`) ?? 0,
    ];
  }
  return out;
}

function find(
  items: readonly Item[],
  pk: string,
  sk: string,
): Item | undefined {
  return items.find((i) => str(i, "PK") === pk && str(i, "SK") === sk);
}

/** Checks that the library reads the legacy values from the migrated table. */
async function assertLibraryReadsLegacy(
  env: Env,
  legacy: readonly Item[],
): Promise<void> {
  const repo = await Repository.open({
    client: env.client,
    stack: env.table,
    configCacheTtlSeconds: 0,
  });
  // Entity with parent and cascade
  const u1 = await repo.getEntity("u1");
  assert.equal(u1?.name, "Entity u1");
  assert.equal(u1?.parentId, "org-1");
  assert.equal(u1?.cascade, true);
  assert.deepEqual(
    u1?.metadata,
    fromAttr(find(legacy, "ENTITY#u1", "#META")?.["metadata"]),
  );
  assert.deepEqual(
    (await repo.getChildren("org-1")).map((e) => e.id).sort(),
    ["u1", "u2"],
  );
  // Limits at every level (resources with '/')
  for (const r of ["openai/gpt-4", "api"]) {
    const got = await repo.getLimits("u1", { resource: r });
    assert.deepEqual(
      Object.fromEntries(
        got.map((
          l,
        ) => [l.name, [l.capacity, l.refillAmount, l.refillPeriodSeconds]]),
      ),
      limitsOf(find(legacy, "ENTITY#u1", `#CONFIG#${r}`)),
    );
  }
  const sys = await repo.getSystemDefaults();
  assert.deepEqual(
    Object.fromEntries(
      sys.limits.map((
        l,
      ) => [l.name, [l.capacity, l.refillAmount, l.refillPeriodSeconds]]),
    ),
    limitsOf(find(legacy, "SYSTEM#", "#CONFIG")),
  );
  assert.equal(sys.onUnavailable, "allow");
  const res = await repo.getResourceDefaults("openai/gpt-4");
  assert.deepEqual(
    Object.fromEntries(
      res.map((
        l,
      ) => [l.name, [l.capacity, l.refillAmount, l.refillPeriodSeconds]]),
    ),
    limitsOf(find(legacy, "RESOURCE#openai/gpt-4", "#CONFIG")),
  );
  assert.deepEqual(
    (await repo.listEntitiesWithCustomLimits("openai/gpt-4")).sort(),
    ["org-1", "u1"],
  );
  assert.deepEqual((await repo.listResourcesWithDefaults()).sort(), [
    "api",
    "openai/gpt-4",
  ]);
  // Bucket levels (0.9 layout, both shards of org-1)
  for (const id of ["u1", "org-1"]) {
    const expected = legacy
      .filter((i) => (str(i, "PK") ?? "").startsWith(`BUCKET#${id}#`))
      .map((i) => {
        const pk = str(i, "PK") ?? "";
        const b = decodeBucket(i, Number(pk.slice(pk.lastIndexOf("#") + 1)));
        return JSON.stringify([
          b.resource,
          b.shard,
          String(b.rf),
          [...b.limits].map(([k, v]) => [k, String(v.tk), String(v.tc)]).sort(),
        ]);
      })
      .sort();
    const actual = (await repo.getEntityBuckets(id)).map((b) =>
      JSON.stringify([
        b.resource,
        b.shard,
        String(b.rf),
        [...b.limits].map(([k, v]) => [k, String(v.tk), String(v.tc)]).sort(),
      ])
    ).sort();
    assert.equal(actual.length, id === "org-1" ? 2 : 2);
    assert.deepEqual(actual, expected);
  }
  // Audit history, newest first
  const events = await repo.getAuditEvents("u1");
  const legacyEvents = legacy.filter((i) => str(i, "PK") === "AUDIT#u1")
    .map((i) => str(i, "event_id")).sort().reverse();
  assert.deepEqual(events.map((e) => e.eventId), legacyEvents);
  assert.deepEqual(events.at(-1)?.details, { n: 0, note: "seeded" });
  // Version record
  const v = await repo.getVersionRecord();
  assert.equal(v?.schemaVersion, "0.10.0");
  assert.equal(v?.updatedBy, "migration:0.10.0");
  assert.equal(v?.lambdaVersion, "0.9.0");
}

// ---------------------------------------------------------------- tests

Deno.test("applyMigrations() brings a 0.9.0 table to namespaced keys the library reads", async (t) => {
  const legacy = fixture();
  await using env = await legacyTable(legacy);

  await t.step("the library refuses the legacy table before", async () => {
    await assert.rejects(
      Repository.open({ client: env.client, stack: env.table }),
      { name: "IncompatibleSchemaError" },
    );
  });

  const events: MigrationEvent[] = [];
  const ctx = env.ctx({ onEvent: (e) => events.push(e) });
  await t.step("status lists the pending migrations", async () => {
    const s = await migrationStatus(ctx);
    assert.equal(s.current?.schemaVersion, "0.9.0");
    assert.equal(s.current?.location, "legacy");
    assert.deepEqual(s.pending.map((m) => m.id), [
      "0.10.0-lsis",
      "0.10.0-namespace-keys",
    ]);
  });

  await t.step("apply copies every item", async () => {
    const r = await applyMigrations(ctx, { to: "0.10.0" });
    assert.equal(r.kind, "applied");
    if (r.kind !== "applied") return;
    assert.equal(r.to, "0.10.0");
    assert.deepEqual(r.steps.map((s) => s.migration.id), [
      "0.10.0-lsis",
      "0.10.0-namespace-keys",
    ]);
    const copied = unprefixed(legacy).filter((i) =>
      planItemCopy(i, "x").kind === "copy"
    ).length;
    assert.equal(r.steps[1]?.report.written, copied);
    assert.ok(
      events.some((e) =>
        e.kind === "progress" && e.snapshot.segmentsDone === 3
      ),
    );
    assert.equal(await readLock(ctx), null);
  });

  await t.step(
    "the library reads the same limits, buckets and audit history",
    async () => {
      await assertLibraryReadsLegacy(env, legacy);
    },
  );

  await t.step("originals are kept without delete", async () => {
    const items = await scanAll(env);
    assert.equal(unprefixed(items).length, legacy.length);
  });

  await t.step("verify finds every copy and equal sample reads", async () => {
    const v = await verifyNamespaceKeys(ctx, { sampleSize: 4 });
    assert.deepEqual(v.issues, []);
    assert.ok(v.ok);
    assert.equal(v.missingCopies, 0);
    assert.equal(v.driftedCopies, 0);
    assert.equal(v.samples.length, 4);
    assert.ok(v.samples.every((s) => s.ok && s.mode === "compared"));
    for (
      const type of [
        "entity",
        "config",
        "bucket",
        "audit",
        "usage",
        "registry",
        "version",
      ] as const
    ) {
      assert.ok(v.legacy[type] > 0, type);
      assert.equal(v.migrated[type], v.legacy[type], type);
    }
    assert.equal(v.legacy.bucket_pre_0_9, 1);
    assert.equal(v.migrated.bucket_pre_0_9, 0);
  });

  await t.step("a second run writes nothing", async () => {
    const before = await scanAll(env);
    env.calls.reset();
    const r = await applyMigrations(ctx, { to: "0.10.0" });
    assert.deepEqual(r, { kind: "up_to_date", version: "0.10.0" });
    assert.deepEqual(await scanAll(env), before);
    // Only the lock was written and removed.
    assert.equal(env.calls.counts.get("PutItemCommand"), 1);
    assert.equal(env.calls.counts.get("DeleteItemCommand"), 1);
    assert.equal(env.calls.counts.get("BatchWriteItemCommand") ?? 0, 0);
  });

  await t.step(
    "the migration itself is idempotent, from checkpoints or from scratch",
    async () => {
      const before = await normalizedDump(env);
      const again = await namespaceKeysMigration.apply(ctx);
      assert.equal(again.scanned, 0, "all segments are checkpointed as done");
      assert.equal(again.written, 0);
      const fresh = await namespaceKeysMigration.apply(
        env.ctx({ restart: true }),
      );
      assert.equal(fresh.written, 0);
      assert.ok(fresh.alreadyPresent > 0);
      assert.deepEqual(await normalizedDump(env), before);
    },
  );

  await t.step("status shows history and no lock", async () => {
    const s = await migrationStatus(ctx);
    assert.equal(s.current?.location, "reserved");
    assert.deepEqual(s.pending, []);
    assert.deepEqual(s.history.map((h) => h.id), [
      "0.10.0-lsis",
      "0.10.0-namespace-keys",
    ]);
    assert.equal(s.lock, null);
    assert.ok(s.checkpoints.length === 3 && s.checkpoints.every((c) => c.done));
  });

  await t.step(
    "rollback across the namespace-keys migration explains the restore",
    async () => {
      const r = await rollbackMigrations(ctx, {
        to: "0.9.0",
        region: "us-east-1",
      });
      assert.equal(r.kind, "irreversible");
      if (r.kind !== "irreversible") return;
      assert.deepEqual(r.blockers.map((b) => b.id), [
        "0.10.0-namespace-keys",
        "0.10.0-lsis",
      ]);
      assert.equal(r.recovery.originalsPresent, true);
      assert.equal(r.recovery.options[0]?.kind, "downgrade");
      assert.ok(r.recovery.restoreBefore !== null);
      assert.ok(
        r.recovery.options.some((o) =>
          o.commands.includes(
            `zae-limiter pitr restore --name ${env.table} --region us-east-1 --time ${r.recovery.restoreBefore} --target-table ${env.table}-restored`,
          )
        ),
      );
      assert.equal((await readStoredVersion(ctx))?.schemaVersion, "0.10.0");
    },
  );
});

Deno.test("applyMigrations() with delete leaves no unprefixed item and the library still reads the legacy values", async () => {
  const legacy = fixture();
  await using env = await legacyTable(legacy);
  const ctx = env.ctx({ delete: true, writeConcurrency: 4 });
  const r = await applyMigrations(ctx);
  assert.equal(r.kind, "applied");
  if (r.kind === "applied") {
    assert.equal(r.steps[1]?.report.deleted, legacy.length);
  }
  const items = await scanAll(env);
  assert.deepEqual(unprefixed(items), []);
  assert.ok(
    !items.some((i) => str(i, "SK")?.startsWith("#MIGRATION#")),
    "checkpoints removed",
  );
  await assertLibraryReadsLegacy(env, legacy);
  const v = await verifyNamespaceKeys(ctx, { sampleSize: 3 });
  assert.ok(v.ok, JSON.stringify(v.issues));
  assert.equal(v.unprefixedRemaining, 0);
  assert.ok(
    v.samples.length === 3 &&
      v.samples.every((s) => s.mode === "read_only" && s.ok),
  );
  assert.equal(v.migrated.entity, 16);
  const rb = await rollbackMigrations(ctx, { to: "0.9.0" });
  assert.ok(rb.kind === "irreversible" && !rb.recovery.originalsPresent);
  assert.deepEqual(rb.recovery.options.map((o) => o.kind), ["pitr", "backup"]);
});

Deno.test("deleteUnprefixedOriginals() copies items written by old clients after the copy phase", async () => {
  await using env = await legacyTable(fixture());
  const ctx = env.ctx();
  await applyMigrations(ctx);
  // An old (0.9) client keeps writing the legacy layout during the dual-format window.
  await putItemsBatched(
    env.client,
    env.table,
    legacyEntityItems({ id: "late", resources: ["openai/gpt-4"] }),
  );
  const before = await verifyNamespaceKeys(ctx, { sampleSize: 0 });
  assert.equal(before.ok, false);
  assert.ok(before.missingCopies >= 5);
  assert.ok(
    before.issues.some((i) =>
      i.kind === "missing_copy" && i.pk === "ENTITY#late"
    ),
  );
  const del = await deleteUnprefixedOriginals(ctx);
  assert.equal(del.written, before.missingCopies);
  assert.deepEqual(unprefixed(await scanAll(env)), []);
  const repo = await Repository.open({ client: env.client, stack: env.table });
  assert.equal((await repo.getEntity("late"))?.name, "Entity late");
  assert.equal((await repo.getEntityBuckets("late")).length, 1);
  const after = await verifyNamespaceKeys(ctx, {
    expectDeleted: true,
    sampleSize: 1,
  });
  assert.ok(after.ok, JSON.stringify(after.issues));
});

Deno.test("dual-format window: an original changed after the copy fails verify, blocks the delete, and a re-copy carries it over", async () => {
  await using env = await legacyTable(fixture());
  const ctx = env.ctx();
  await applyMigrations(ctx);
  // An old (0.9) client raises u1's limit on openai/gpt-4 after the copy.
  const key = { PK: { S: "ENTITY#u1" }, SK: { S: "#CONFIG#openai/gpt-4" } };
  const original = (await scanAll(env)).find((i) =>
    str(i, "PK") === "ENTITY#u1" && str(i, "SK") === "#CONFIG#openai/gpt-4"
  );
  assert.ok(original);
  await env.client.send(
    new PutItemCommand({
      TableName: env.table,
      Item: { ...original, l_rpm_cp: { N: "777" } },
    }),
  );
  const before = await verifyNamespaceKeys(ctx, { sampleSize: 0 });
  assert.equal(before.ok, false);
  assert.equal(before.driftedCopies, 1);
  assert.deepEqual(
    before.issues.filter((i) => i.kind === "drifted_copy").map((i) =>
      i.kind === "drifted_copy" ? [i.type, i.pk, i.sk] : []
    ),
    [["config", key.PK.S, key.SK.S]],
  );
  // --delete refuses while the drift exists; nothing of the page is deleted.
  await assert.rejects(deleteUnprefixedOriginals(ctx), (e) => {
    assert.ok(e instanceof MigrationError);
    assert.equal(e.code, "MIGRATION_DRIFT");
    assert.match(e.message, /ENTITY#u1 SK=#CONFIG#openai\/gpt-4/);
    return true;
  });
  assert.ok(
    unprefixed(await scanAll(env)).some((i) => str(i, "PK") === "ENTITY#u1"),
  );
  // Re-running the copy carries the change over (the original wins until --delete).
  await clearCopyCheckpoints(ctx);
  const again = await copyNamespaceKeys(ctx);
  assert.equal(again.written, 1);
  const fixed = await verifyNamespaceKeys(ctx, { sampleSize: 0 });
  assert.ok(fixed.ok, JSON.stringify(fixed.issues));
  await deleteUnprefixedOriginals(ctx);
  const repo = await Repository.open({ client: env.client, stack: env.table });
  const limits = await repo.getLimits("u1", { resource: "openai/gpt-4" });
  assert.equal(limits.find((l) => l.name === "rpm")?.capacity, 777);
});

Deno.test("deleteUnprefixedOriginals() with overwriteDrift copies a changed original again before deleting it", async () => {
  await using env = await legacyTable(fixture());
  await applyMigrations(env.ctx());
  const original = (await scanAll(env)).find((i) =>
    str(i, "PK") === "ENTITY#u1" && str(i, "SK") === "#CONFIG#openai/gpt-4"
  );
  assert.ok(original);
  await env.client.send(
    new PutItemCommand({
      TableName: env.table,
      Item: { ...original, l_rpm_cp: { N: "555" } },
    }),
  );
  await deleteUnprefixedOriginals(env.ctx({ overwriteDrift: true }));
  assert.deepEqual(unprefixed(await scanAll(env)), []);
  const repo = await Repository.open({ client: env.client, stack: env.table });
  const limits = await repo.getLimits("u1", { resource: "openai/gpt-4" });
  assert.equal(limits.find((l) => l.name === "rpm")?.capacity, 555);
});

Deno.test("applyMigrations() aborted at random points and resumed reaches the uninterrupted end state", async (t) => {
  const legacy = fixture();
  const reference = await (async () => {
    await using env = await legacyTable(legacy);
    const r = await applyMigrations(env.ctx({ delete: true }));
    assert.equal(r.kind, "applied");
    return await normalizedDump(env);
  })();
  for (const seed of [1, 2, 3, 4]) {
    await t.step(`seed ${seed}`, async () => {
      await using env = await legacyTable(legacy);
      const random = seededRandom(seed);
      let runs = 0;
      for (;;) {
        runs++;
        assert.ok(runs < 20, "converges");
        const controller = new AbortController();
        // Abort after N successful writes (copies, deletes or bookkeeping), N random per run.
        const limit = 1 + Math.floor(random() * legacy.length * 1.5);
        let writes = 0;
        env.afterCommand = (name) => {
          if (/Put|BatchWrite|Delete|Update|TransactWrite/.test(name)) {
            if (++writes === limit) {
              controller.abort(new Error(`abort after ${limit} writes`));
            }
          }
        };
        const ctx = env.ctx({
          delete: true,
          signal: controller.signal,
          writeConcurrency: 1 + Math.floor(random() * 6),
        });
        const r = await applyMigrations(ctx);
        env.afterCommand = null;
        assert.equal(
          await readLock(ctx),
          null,
          "the lock is released after an abort",
        );
        if (r.kind === "applied" || r.kind === "up_to_date") break;
        assert.equal(r.kind, "interrupted");
      }
      assert.ok(runs >= 2, "at least one run was interrupted");
      assert.deepEqual(await normalizedDump(env), reference);
      await assertLibraryReadsLegacy(env, legacy);
    });
  }
});

Deno.test("copyNamespaceKeys() resumes from checkpoints after an abort", async () => {
  const legacy = fixture();
  await using env = await legacyTable(legacy);
  const controller = new AbortController();
  let puts = 0;
  env.afterCommand = (name) => {
    if (name === "PutItemCommand" && ++puts === 40) {
      controller.abort(new Error("crash"));
    }
  };
  await assert.rejects(
    copyNamespaceKeys(
      env.ctx({ signal: controller.signal, writeConcurrency: 1, segments: 2 }),
    ),
    { message: "crash" },
  );
  env.afterCommand = null;
  const saved = (await scanAll(env)).filter((i) =>
    (str(i, "SK") ?? "").startsWith("#MIGRATION#0.10.0#SEGMENT#")
  );
  assert.ok(saved.length > 0, "checkpoints were written");
  const events: MigrationEvent[] = [];
  const resumed = await copyNamespaceKeys(
    env.ctx({ segments: 5, onEvent: (e) => events.push(e) }),
  );
  assert.ok(
    events.some((e) =>
      e.kind === "log" && e.level === "warn" && e.message.includes("2 segments")
    ),
    "keeps the checkpoints' segment count",
  );
  const copies =
    legacy.filter((i) => planItemCopy(i, "x").kind === "copy").length;
  assert.ok(resumed.written < copies, "part of the work was done before");
  assert.ok(
    resumed.alreadyPresent <= 2 * 7,
    "at most one page per segment is redone",
  );
  const last = events.filter((e) => e.kind === "progress").at(-1);
  assert.ok(last?.kind === "progress" && last.snapshot.baseline > 0);
  assert.ok(
    events.some((e) => e.kind === "log" && e.message.startsWith("resuming")),
  );
  const v = await verifyNamespaceKeys(env.ctx(), { sampleSize: 2 });
  assert.equal(v.missingCopies, 0);
});

Deno.test("planNamespaceKeys() counts record types and estimates cost without writing", async () => {
  const legacy = fixture();
  await using env = await legacyTable(legacy);
  const before = await scanAll(env);
  const plan = await planNamespaceKeys(env.ctx({ maxWcuPerSecond: 100 }));
  assert.deepEqual(await scanAll(env), before, "read-only");
  assert.equal(plan.namespaceId, null, "default is not registered yet");
  assert.equal(plan.scanned, legacy.length);
  assert.equal(plan.alreadyPrefixed, 0);
  const expect = (type: string): number =>
    legacy.filter((i) => planItemCopy(i, "x").type === type).length;
  for (
    const type of [
      "entity",
      "config",
      "bucket",
      "bucket_pre_0_9",
      "audit",
      "usage",
      "registry",
      "version",
    ] as const
  ) {
    assert.equal(plan.legacy[type], expect(type), type);
  }
  assert.equal(plan.legacy.entity, 16);
  assert.equal(plan.legacy.version, 1);
  assert.equal(plan.notCopied, 1);
  assert.equal(plan.toCopy, legacy.length - 1);
  assert.ok(
    plan.estimate.copyWcu >= plan.toCopy * 2,
    "GSI4 entries are counted",
  );
  assert.ok(plan.estimate.costUsd.total > 0);
  assert.equal(plan.estimate.copySeconds, plan.estimate.copyWcu / 100);
});

Deno.test("copyNamespaceKeys() keeps consumed write capacity under maxWcuPerSecond", async () => {
  const items = legacyEntityItems({
    id: "u1",
    resources: RESOURCES,
    auditEvents: 20,
  });
  items.push(...legacySystemItems());
  await using env = await legacyTable(items);
  let t = Date.UTC(2026, 0, 15);
  const slept: number[] = [];
  const clock: Clock = {
    now: () => t,
    sleep(ms: number, signal?: AbortSignal) {
      signal?.throwIfAborted();
      slept.push(ms);
      t += ms;
      return Promise.resolve();
    },
  };
  const start = t;
  let consumed = 0;
  const r = await copyNamespaceKeys(env.ctx({
    clock,
    maxWcuPerSecond: 10,
    segments: 2,
    onEvent: (e) => {
      if (e.kind === "progress") consumed = e.snapshot.consumedWcu;
    },
  }));
  assert.equal(r.written, items.length);
  const elapsedSeconds = (t - start) / 1000;
  // One second of burst is free; the rest is paced at 10 WCU/s.
  assert.ok(consumed >= items.length, `consumed ${consumed}`);
  assert.ok(
    elapsedSeconds >= ((consumed - 10) / 10) * 0.9,
    `only ${elapsedSeconds}s for ${consumed} WCU`,
  );
  assert.ok(slept.length > 0);
});

Deno.test("copyNamespaceKeys() asks for ConsumedCapacity on every write when paced, on one in UNPACED_MEASURE_EVERY otherwise, and reports a like total", async () => {
  const items: Item[] = [];
  for (let i = 0; i < 4; i++) {
    items.push(
      ...legacyEntityItems({
        id: `u${i}`,
        resources: RESOURCES,
        auditEvents: 20,
        random: seededRandom(i + 1),
      }),
    );
  }
  items.push(...legacySystemItems());
  const run = async (maxWcuPerSecond: number | undefined) => {
    await using env = await legacyTable(items);
    let copies = 0;
    let measured = 0;
    env.client.middlewareStack.add(
      (next, context) => (args) => {
        const input = args.input as {
          ConditionExpression?: string;
          ReturnConsumedCapacity?: string;
        };
        if (
          context.commandName === "PutItemCommand" &&
          input.ConditionExpression === "attribute_not_exists(PK)"
        ) {
          copies++;
          if (input.ReturnConsumedCapacity === "TOTAL") measured++;
        }
        return next(args);
      },
      { step: "initialize", name: "countMeasuredPuts" },
    );
    let consumed = 0;
    const r = await copyNamespaceKeys(env.ctx({
      ...(maxWcuPerSecond === undefined ? {} : { maxWcuPerSecond }),
      onEvent: (e) => {
        if (e.kind === "progress") consumed = e.snapshot.consumedWcu;
      },
    }));
    assert.equal(r.written, items.length);
    return { copies, measured, consumed };
  };
  const paced = await run(1_000_000);
  assert.equal(paced.copies, items.length);
  assert.equal(
    paced.measured,
    items.length,
    "a paced copy measures every write",
  );
  const unpaced = await run(undefined);
  assert.equal(unpaced.copies, items.length);
  assert.equal(
    unpaced.measured,
    Math.ceil(items.length / UNPACED_MEASURE_EVERY),
    "the first write and one in UNPACED_MEASURE_EVERY",
  );
  // The sample's measured/estimated ratio scales the rest: same order as the fully measured total.
  assert.ok(
    Math.abs(unpaced.consumed - paced.consumed) <= paced.consumed * 0.25,
    `unpaced ${unpaced.consumed} WCU vs paced (measured) ${paced.consumed}`,
  );
});

Deno.test("applyMigrations() runs 0.8.0 on a 0.7.0 table: burst becomes capacity, on_unavailable survives", async (t) => {
  const items: Item[] = [
    ...legacySystemItems({
      schemaVersion: "0.7.0",
      resources: [],
      provisioner: false,
    })
      .filter((i) => str(i, "SK") === "#VERSION"),
    {
      PK: { S: "SYSTEM#" },
      SK: { S: "#CONFIG" },
      on_unavailable: { S: "block" },
    },
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
      name: "tpm",
      capacity: 500,
      refillAmount: 400,
      refillPeriodSeconds: 60,
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
    legacyLimitItem({
      pk: "ENTITY#u1",
      resource: "openai/gpt-4",
      name: "tpm",
      capacity: 70,
      refillAmount: 70,
      refillPeriodSeconds: 60,
    }),
    legacyLimitItem({
      pk: "ENTITY#u1",
      resource: "_default_",
      name: "rpm",
      capacity: 3,
      refillAmount: 3,
      refillPeriodSeconds: 1,
    }),
    { PK: { S: "SYSTEM#" }, SK: { S: "#LIMIT#orphan" }, capacity: { N: "1" } },
    ...legacyEntityItems({ id: "u1", auditEvents: 1 }),
  ];
  await using env = await legacyTable(items);
  const ctx = env.ctx({ pageSize: 3 });

  await t.step("to 0.8.0 only, twice", async () => {
    const r = await applyMigrations(ctx, { to: "0.8.0" });
    assert.ok(r.kind === "applied" && r.to === "0.8.0");
    const v = await readStoredVersion(ctx);
    assert.equal(v?.schemaVersion, "0.8.0");
    assert.equal(
      v?.location,
      "legacy",
      "below 0.10 the record stays unprefixed",
    );
    const dump = await scanAll(env);
    assert.deepEqual(limitsOf(find(dump, "SYSTEM#", "#CONFIG")), {
      rpm: [150, 100, 60],
      tpm: [1000, 1000, 60],
    });
    assert.equal(
      str(find(dump, "SYSTEM#", "#CONFIG") ?? {}, "on_unavailable"),
      "block",
    );
    assert.ok(
      find(dump, "SYSTEM#", "#LIMIT#orphan"),
      "items without limit_name are left alone",
    );
    assert.equal(
      dump.filter((i) => (str(i, "SK") ?? "").startsWith("#LIMIT#")).length,
      1,
    );
    const again = await compositeConfigsMigration.apply(ctx);
    assert.equal(again.written, 0);
    assert.equal(again.deleted, 0);
    assert.deepEqual(await scanAll(env), dump);
  });

  await t.step("on to 0.10.0, read through the library", async () => {
    const r = await applyMigrations(ctx);
    assert.ok(r.kind === "applied");
    assert.deepEqual(r.steps.map((s) => s.migration.id), [
      "0.9.0-bucket-pks",
      "0.10.0-lsis",
      "0.10.0-namespace-keys",
    ]);
    const repo = await Repository.open({
      client: env.client,
      stack: env.table,
      configCacheTtlSeconds: 0,
    });
    const sys = await repo.getSystemDefaults();
    assert.deepEqual(sys.limits.map((l) => [l.name, l.capacity]), [
      ["rpm", 150],
      ["tpm", 1000],
    ]);
    assert.equal(sys.onUnavailable, "block");
    assert.deepEqual(
      (await repo.getResourceDefaults("openai/gpt-4")).map((
        l,
      ) => [l.name, l.capacity, l.refillAmount]),
      [["tpm", 500, 400]],
    );
    assert.deepEqual(
      (await repo.getLimits("u1", { resource: "openai/gpt-4" })).map((
        l,
      ) => [l.name, l.capacity]),
      [["rpm", 9], ["tpm", 70]],
    );
    assert.deepEqual(
      (await repo.getLimits("u1")).map((
        l,
      ) => [l.name, l.capacity, l.refillPeriodSeconds]),
      [["rpm", 3, 1]],
    );
    assert.deepEqual(await repo.listEntitiesWithCustomLimits("openai/gpt-4"), [
      "u1",
    ]);
    assert.deepEqual((await repo.listResourcesWithEntityConfigs()).sort(), [
      "_default_",
      "openai/gpt-4",
    ]);
    assert.deepEqual(await repo.listResourcesWithDefaults(), ["openai/gpt-4"]);
  });
});

Deno.test("applyMigrations() refuses a held lock and breaks a stale one only when asked", async () => {
  await using env = await legacyTable(
    fixture().filter((i) => str(i, "PK") === "SYSTEM#"),
  );
  const ctx = env.ctx();
  let release: () => void = () => {};
  const holding = withMigrationLock(
    ctx,
    () => new Promise<void>((r) => (release = r)),
    { owner: "other-host:1" },
  );
  await new Promise((r) => setTimeout(r, 50));
  await assert.rejects(applyMigrations(ctx), (e) => {
    assert.ok(e instanceof MigrationError);
    assert.equal(e.code, "MIGRATION_LOCKED");
    assert.equal(e.details["owner"], "other-host:1");
    assert.equal(e.details["stale"], false);
    return true;
  });
  release();
  await holding;
  // A crashed run left an expired lock.
  await env.client.send(
    new PutItemCommand({
      TableName: env.table,
      Item: {
        PK: { S: "_/SYSTEM#" },
        SK: { S: "#MIGRATION_LOCK" },
        owner: { S: "crashed" },
        expires_at: { N: String(Date.now() - 1000) },
      },
    }),
  );
  await assert.rejects(applyMigrations(ctx), {
    name: "MigrationError",
    code: "MIGRATION_LOCKED",
  });
  const r = await applyMigrations(ctx, { breakStaleLock: true });
  assert.equal(r.kind, "applied");
  assert.equal(await readLock(ctx), null);
});

Deno.test("applyMigrations() takes over at once the lock of a holder proven dead, only when asked", async () => {
  await using env = await legacyTable(
    fixture().filter((i) => str(i, "PK") === "SYSTEM#"),
  );
  const ctx = env.ctx();
  // A run on this host crashed (kill -9) a second ago: its lock has minutes left.
  await env.client.send(
    new PutItemCommand({
      TableName: env.table,
      Item: {
        PK: { S: "_/SYSTEM#" },
        SK: { S: "#MIGRATION_LOCK" },
        owner: { S: "migrate-crashed" },
        host: { S: "h1" },
        pid: { N: "4242" },
        expires_at: { N: String(Date.now() + 240_000) },
        heartbeat_at: { N: String(Date.now() - 1000) },
      },
    }),
  );
  const isHolderDead = (l: { host: string | null; pid: number | null }) =>
    l.host === "h1" && l.pid === 4242;
  await assert.rejects(applyMigrations(ctx, { isHolderDead }), (e) => {
    assert.ok(e instanceof MigrationError);
    assert.equal(e.code, "MIGRATION_LOCKED");
    assert.equal(e.details["dead"], true);
    assert.equal(e.details["stale"], true);
    assert.match(e.message, /host h1, pid 4242.*no longer running/);
    return true;
  });
  // A live holder elsewhere is never broken before expiry, even when asked.
  await assert.rejects(
    applyMigrations(ctx, { breakStaleLock: true, isHolderDead: () => false }),
    { name: "MigrationError", code: "MIGRATION_LOCKED" },
  );
  const status = await migrationStatus(ctx, { isHolderDead });
  assert.equal(status.lock?.stale, true);
  assert.equal(status.lock?.pid, 4242);
  const r = await applyMigrations(ctx, {
    breakStaleLock: true,
    isHolderDead,
    holder: { host: "h2", pid: 7 },
  });
  assert.equal(r.kind, "applied");
  assert.equal(await readLock(ctx), null);
});

Deno.test("withMigrationLock() renews the lock from keepAlive and detects a takeover", async () => {
  await using env = await legacyTable(
    fixture().filter((i) => str(i, "PK") === "SYSTEM#"),
  );
  let t = Date.now();
  const clock: Clock = {
    now: () => t,
    sleep: (ms: number) => {
      t += ms;
      return Promise.resolve();
    },
  };
  const ctx = env.ctx({ clock });
  await withMigrationLock(ctx, async (lctx) => {
    const first = await readLock(lctx);
    assert.equal(first?.owner, "me");
    t += 500;
    await lctx.keepAlive();
    assert.equal(
      (await readLock(lctx))?.expiresAt,
      first?.expiresAt,
      "too early to renew",
    );
    t += 1500;
    await lctx.keepAlive();
    const second = await readLock(lctx);
    assert.equal(second?.expiresAt, t + 3000);
    await env.client.send(
      new PutItemCommand({
        TableName: env.table,
        Item: {
          PK: { S: "_/SYSTEM#" },
          SK: { S: "#MIGRATION_LOCK" },
          owner: { S: "thief" },
          expires_at: { N: String(t + 100_000) },
        },
      }),
    );
    t += 2000;
    await assert.rejects(lctx.keepAlive(), {
      name: "MigrationError",
      code: "MIGRATION_LOCK_LOST",
    });
  }, { lockTtlMs: 3000, owner: "me" });
  assert.equal(
    (await readLock(ctx))?.owner,
    "thief",
    "release leaves a foreign lock alone",
  );
});

Deno.test("applyMigrations() migrates a legacy table on which a 0.10 client already wrote a version record", async () => {
  const legacy = fixture();
  await using env = await legacyTable(legacy);
  // Opening with provision and without the version check writes `_/SYSTEM#` 0.10.0 and registers "default".
  await Repository.open({
    client: env.client,
    stack: env.table,
    provision: true,
    skipVersionCheck: true,
  });
  const ctx = env.ctx();
  const before = await readStoredVersion(ctx);
  assert.equal(before?.schemaVersion, "0.9.0");
  assert.equal(before?.reservedClaim, "0.10.0");
  const r = await applyMigrations(ctx);
  assert.ok(r.kind === "applied");
  assert.deepEqual(r.steps.map((s) => s.migration.id), [
    "0.10.0-lsis",
    "0.10.0-namespace-keys",
  ]);
  await assertLibraryReadsLegacy(env, legacy);
  assert.equal((await readStoredVersion(ctx))?.reservedClaim, null);
});

Deno.test("rollbackMigrations() undoes reversible migrations newest first", async () => {
  await using env = await legacyTable(
    fixture().filter((i) => str(i, "PK") === "SYSTEM#"),
  );
  const marker = { PK: { S: "_/SYSTEM#" }, SK: { S: "#MARKER" } };
  const reversible: Migration = {
    id: "0.11.0-marker",
    version: "0.11.0",
    description: "writes a marker",
    reversible: true,
    async apply(ctx) {
      await ctx.client.send(
        new PutItemCommand({ TableName: ctx.tableName, Item: marker }),
      );
      return {
        scanned: 0,
        written: 1,
        alreadyPresent: 0,
        deleted: 0,
        notes: [],
      };
    },
    async rollback(ctx) {
      await ctx.client.send(
        new DeleteItemCommand({ TableName: ctx.tableName, Key: marker }),
      );
      return {
        scanned: 0,
        written: 0,
        alreadyPresent: 0,
        deleted: 1,
        notes: [],
      };
    },
  };
  const registry = createRegistry([...MIGRATIONS, reversible]);
  const ctx = env.ctx();
  const up = await applyMigrations(ctx, { to: "0.11.0", registry });
  assert.ok(up.kind === "applied" && up.to === "0.11.0");
  assert.ok(find(await scanAll(env), "_/SYSTEM#", "#MARKER"));
  const down = await rollbackMigrations(ctx, { to: "0.10.0", registry });
  assert.ok(down.kind === "rolled_back" && down.to === "0.10.0");
  assert.equal(find(await scanAll(env), "_/SYSTEM#", "#MARKER"), undefined);
  const v = await readStoredVersion(ctx);
  assert.equal(v?.schemaVersion, "0.10.0");
  assert.equal(v?.updatedBy, "rollback:0.11.0");
  assert.deepEqual(
    (await migrationStatus(ctx, { registry, to: "0.11.0" })).pending.map((m) =>
      m.id
    ),
    ["0.11.0-marker"],
  );
});

Deno.test("applyMigrations() reports a failing migration with its id and stops", async () => {
  await using env = await legacyTable(
    fixture().filter((i) => str(i, "PK") === "SYSTEM#"),
  );
  const failing: Migration = {
    id: "0.11.0-broken",
    version: "0.11.0",
    description: "fails",
    reversible: false,
    apply: () => Promise.reject(new Error("disk on fire")),
  };
  const ctx = env.ctx();
  await assert.rejects(
    applyMigrations(ctx, {
      to: "0.11.0",
      registry: createRegistry([...MIGRATIONS, failing]),
    }),
    (e) => {
      assert.ok(e instanceof MigrationError);
      assert.equal(e.code, "MIGRATION_FAILED");
      assert.match(e.message, /0\.11\.0-broken.*disk on fire/);
      assert.deepEqual(e.details["applied"], [
        "0.10.0-lsis",
        "0.10.0-namespace-keys",
      ]);
      return true;
    },
  );
  assert.equal(
    (await readStoredVersion(ctx))?.schemaVersion,
    "0.10.0",
    "advanced to the last good version",
  );
  assert.equal(await readLock(ctx), null);
});

Deno.test("seedLegacyTable() seeds N legacy items that the migration plan sees", async () => {
  await using env = await legacyTable([]);
  const n = await seedLegacyTable(env.client, env.table, {
    items: 400,
    seed: 9,
  });
  assert.equal(n, 400);
  const items = await scanAll(env);
  assert.equal(items.length, 400);
  assert.equal(unprefixed(items).length, 400);
  const plan = await planNamespaceKeys(env.ctx({ pageSize: 100 }));
  assert.equal(plan.scanned, 400);
  assert.equal(plan.legacy.version, 1);
});

Deno.test("stop DynamoDB Local", async () => {
  await stopLocal();
});
