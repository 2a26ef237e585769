/**
 * Behavioural tests of `Repository` against DynamoDB Local: entities,
 * stored limits at every level, audit events, the version check and input
 * validation, each checked in the stored items.
 */
import assert from "node:assert/strict";
import {
  EntityExistsError,
  IncompatibleSchemaError,
  Limit,
  MinimumClientVersionError,
  RateLimiter,
  Repository,
  SCHEMA_VERSION,
  ValidationError,
} from "../../mod.ts";
import { freshRepo, localClient, manualClock, tableName } from "./_harness.ts";
import {
  num,
  rawBucket,
  rawGet,
  type RawItem,
  scanAll,
  text,
  writeCount,
} from "./_stored.ts";

const START = Date.UTC(2030, 0, 15, 12, 0, 0);
const START_S = START / 1000;
const START_ISO = "2030-01-15T12:00:00Z";
const ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/;

function hasAttr(item: RawItem | undefined, attr: string): boolean {
  return item !== undefined && attr in item;
}

// ------------------------------------------------------------ entities

Deno.test("createEntity() stores the META item and refuses a duplicate", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  const ns = repo.namespaceId;
  const org = await repo.createEntity("org", {
    name: "Acme",
    metadata: { tier: "gold" },
  });
  assert.deepEqual(org, {
    id: "org",
    name: "Acme",
    parentId: null,
    cascade: false,
    metadata: { tier: "gold" },
    createdAt: START_ISO,
  });
  await repo.createEntity("key-1", { parentId: "org", cascade: true });

  const meta = await rawGet(
    env.client,
    repo.tableName,
    `${ns}/ENTITY#org`,
    "#META",
  );
  assert.equal(text(meta, "entity_id"), "org");
  assert.equal(text(meta, "name"), "Acme");
  assert.equal(meta?.["parent_id"]?.NULL, true);
  assert.equal(meta?.["cascade"]?.BOOL, false);
  assert.deepEqual(meta?.["metadata"], { M: { tier: { S: "gold" } } });
  assert.equal(text(meta, "created_at"), START_ISO);
  assert.equal(text(meta, "GSI4PK"), ns);
  assert.equal(text(meta, "GSI4SK"), `${ns}/ENTITY#org`);
  assert.equal(hasAttr(meta, "GSI1PK"), false, "a parent is not in GSI1");
  assert.equal(hasAttr(meta, "ttl"), false);

  const child = await rawGet(
    env.client,
    repo.tableName,
    `${ns}/ENTITY#key-1`,
    "#META",
  );
  assert.equal(text(child, "parent_id"), "org");
  assert.equal(child?.["cascade"]?.BOOL, true);
  assert.equal(text(child, "name"), "key-1", "name defaults to the id");
  assert.equal(text(child, "GSI1PK"), `${ns}/PARENT#org`);
  assert.equal(text(child, "GSI1SK"), "CHILD#key-1");

  env.calls.reset();
  await assert.rejects(repo.createEntity("org", { name: "Other" }), {
    name: "EntityExistsError",
    code: "ENTITY_EXISTS",
    entityId: "org",
    message: "Entity already exists: org",
  });
  assert.equal(env.calls.counts.get("PutItemCommand"), 1);
  assert.equal(writeCount(env.calls), 1, "no audit event for a refused create");
  const again = await rawGet(
    env.client,
    repo.tableName,
    `${ns}/ENTITY#org`,
    "#META",
  );
  assert.deepEqual(again, meta, "the existing entity is untouched");
  assert.ok(
    (await repo.getAuditEvents("org")).every((e) =>
      e.action === "entity_created"
    ),
  );
  assert.equal((await repo.getAuditEvents("org")).length, 1);
  assert.ok(new EntityExistsError("x") instanceof Error);

  const got = await repo.getEntity("key-1");
  assert.equal(got?.parentId, "org");
  assert.equal(got?.cascade, true);
  assert.equal(await repo.getEntity("nobody"), null);
});

Deno.test("createEntity() validates before writing anything", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  env.calls.reset();
  await assert.rejects(repo.createEntity("#bad"), {
    name: "InvalidIdentifierError",
    code: "INVALID_IDENTIFIER",
    field: "entity_id",
  });
  await assert.rejects(repo.createEntity("ok", { parentId: "bad parent" }), {
    name: "InvalidIdentifierError",
    field: "parent_id",
  });
  await assert.rejects(repo.createEntity("ok", { cascade: true }), {
    name: "ValidationError",
    code: "VALIDATION_FAILED",
    field: "cascade",
  });
  await assert.rejects(repo.createEntity("ok", { parentId: "ok" }), {
    name: "ValidationError",
    field: "parent_id",
  });
  await assert.rejects(repo.createEntity("ok", { principal: "not valid!" }), {
    name: "InvalidIdentifierError",
    field: "principal",
  });
  assert.equal(env.calls.total(), 0, "no command at all");
  assert.equal(await repo.getEntity("ok"), null);
});

Deno.test("getChildren() lists the children of one parent only", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  await repo.createEntity("org-a");
  await repo.createEntity("org-b");
  await repo.createEntity("a1", { parentId: "org-a" });
  await repo.createEntity("a2", { parentId: "org-a", cascade: true });
  await repo.createEntity("b1", { parentId: "org-b" });
  const children = await repo.getChildren("org-a");
  assert.deepEqual(children.map((c) => c.id).sort(), ["a1", "a2"]);
  assert.equal(children.find((c) => c.id === "a2")?.cascade, true);
  assert.ok(children.every((c) => c.parentId === "org-a"));
  assert.deepEqual((await repo.getChildren("org-b")).map((c) => c.id), ["b1"]);
  assert.deepEqual(await repo.getChildren("a1"), []);
});

Deno.test("deleteEntity() removes META, configs and every bucket item and keeps the audit trail", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  const ns = repo.namespaceId;
  const limiter = new RateLimiter(repo);
  await repo.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  await repo.createEntity("gone");
  await repo.createEntity("kept");
  await repo.setLimits("gone", [Limit.perMinute("rpm", 5)]);
  await repo.setLimits("gone", [Limit.perMinute("rpm", 3)], {
    resource: "api",
  });
  await repo.setLimits("kept", [Limit.perMinute("rpm", 3)], {
    resource: "api",
  });
  for (const entityId of ["gone", "kept"]) {
    for (const resource of ["api", "openai/gpt-4"]) {
      await limiter.acquire(
        { entityId, resource, consume: { rpm: 1 } },
        () => {},
      );
    }
  }
  const keptBefore = (await scanAll(env.client, repo.tableName)).filter((i) =>
    JSON.stringify(i).includes("kept")
  );

  const deleted = await repo.deleteEntity("gone", { principal: "admin" });
  assert.equal(deleted, 5, "META, two configs, two buckets");
  const left = (await scanAll(env.client, repo.tableName)).filter((i) =>
    text(i, "PK").startsWith(`${ns}/ENTITY#gone`) ||
    text(i, "PK").startsWith(`${ns}/BUCKET#gone#`)
  );
  assert.deepEqual(left, []);
  assert.equal(await repo.getEntity("gone"), null);
  assert.deepEqual(await repo.getLimits("gone", { resource: "api" }), []);
  assert.equal(await rawBucket(env.client, repo, "gone", "api"), undefined);
  assert.equal(
    await rawBucket(env.client, repo, "gone", "openai/gpt-4"),
    undefined,
  );
  assert.deepEqual(await repo.listEntitiesWithCustomLimits("api"), ["kept"]);
  assert.deepEqual(await repo.listResourcesWithEntityConfigs(), ["api"]);
  const keptAfter = (await scanAll(env.client, repo.tableName)).filter((i) =>
    JSON.stringify(i).includes("kept")
  );
  assert.deepEqual(keptAfter, keptBefore, "the other entity is untouched");

  const events = await repo.getAuditEvents("gone");
  assert.equal(events[0]?.action, "entity_deleted");
  assert.deepEqual(events[0]?.details, { records_deleted: 5 });
  assert.equal(events[0]?.principal, "admin");
  assert.equal(events.at(-1)?.action, "entity_created");

  // The cached config is gone too: the next acquire uses the system default at full capacity.
  const r = await repo.resolveLimits("gone", "api");
  assert.equal(r?.source, "system");
  await limiter.acquire(
    { entityId: "gone", resource: "api", consume: { rpm: 1 } },
    () => {},
  );
  const fresh = await rawBucket(env.client, repo, "gone", "api");
  assert.equal(num(fresh, "b_rpm_cp"), 10_000);
  assert.equal(num(fresh, "b_rpm_tk"), 9000);

  // Deleting what does not exist is a silent no-op.
  env.calls.reset();
  assert.equal(await repo.deleteEntity("never-existed"), 0);
  assert.equal(writeCount(env.calls), 0);
  assert.deepEqual(await repo.getAuditEvents("never-existed"), []);
});

Deno.test("deleteEntity() refuses while the entity has children", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  await repo.createEntity("org");
  await repo.createEntity("k1", { parentId: "org" });
  env.calls.reset();
  await assert.rejects(repo.deleteEntity("org"), (e) => {
    assert.ok(e instanceof ValidationError);
    assert.equal(e.code, "VALIDATION_FAILED");
    assert.equal(e.field, "entity_id");
    assert.match(e.reason, /k1/);
    return true;
  });
  assert.equal(writeCount(env.calls), 0);
  assert.ok(await repo.getEntity("org"));
  await repo.deleteEntity("k1");
  assert.equal(await repo.deleteEntity("org"), 1);
  assert.equal(await repo.getEntity("org"), null);
});

// ------------------------------------------------------------ audit

Deno.test("getAuditEvents() returns events newest first with increasing ULIDs and pages with startEventId", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  const ns = repo.namespaceId;
  await repo.createEntity("e1", { principal: "admin" });
  await repo.setLimits("e1", [Limit.perMinute("rpm", 5)], {
    resource: "api",
    principal: "arn:aws:iam::123456789012:user/ops",
  });
  clock.advance(1500);
  await repo.deleteLimits("e1", { resource: "api" });
  await repo.deleteEntity("e1");

  const events = await repo.getAuditEvents("e1");
  assert.deepEqual(events.map((e) => e.action), [
    "entity_deleted",
    "limits_deleted",
    "limits_set",
    "entity_created",
  ]);
  for (const e of events) {
    assert.match(e.eventId, ULID);
    assert.equal(e.entityId, "e1");
  }
  for (let i = 1; i < events.length; i++) {
    const newer = events[i - 1]?.eventId ?? "";
    const older = events[i]?.eventId ?? "";
    assert.ok(newer > older, `${newer} > ${older}`);
  }
  const [deletedEv, limitsDeleted, limitsSet, created] = events;
  assert.equal(created?.principal, "admin");
  assert.equal(created?.timestamp, START_ISO);
  assert.equal(created?.resource, null);
  assert.deepEqual(created?.details, {
    name: "e1",
    parent_id: null,
    cascade: false,
    metadata: {},
  });
  assert.equal(limitsSet?.resource, "api");
  assert.equal(limitsSet?.principal, "arn:aws:iam::123456789012:user/ops");
  assert.deepEqual(limitsSet?.details, {
    limits: [{
      name: "rpm",
      capacity: 5,
      refill_amount: 5,
      refill_period_seconds: 60,
    }],
  });
  assert.equal(limitsDeleted?.resource, "api");
  assert.equal(limitsDeleted?.timestamp, "2030-01-15T12:00:01Z");
  assert.deepEqual(limitsDeleted?.details, { limits: ["rpm"] });
  assert.deepEqual(deletedEv?.details, { records_deleted: 1 });

  const raw = await rawGet(
    env.client,
    repo.tableName,
    `${ns}/AUDIT#e1`,
    `#AUDIT#${created?.eventId}`,
  );
  assert.equal(text(raw, "event_id"), created?.eventId);
  assert.equal(text(raw, "action"), "entity_created");
  assert.equal(num(raw, "ttl"), START_S + 90 * 86400);
  assert.equal(text(raw, "GSI4PK"), ns);
  assert.equal(text(raw, "GSI4SK"), `${ns}/AUDIT#e1`);

  const page1 = await repo.getAuditEvents("e1", { limit: 2 });
  assert.deepEqual(page1.map((e) => e.eventId), [
    deletedEv?.eventId,
    limitsDeleted?.eventId,
  ]);
  const page2 = await repo.getAuditEvents("e1", {
    limit: 2,
    startEventId: page1[1]?.eventId ?? "",
  });
  assert.deepEqual(page2.map((e) => e.eventId), [
    limitsSet?.eventId,
    created?.eventId,
  ]);
  assert.deepEqual(
    await repo.getAuditEvents("e1", { startEventId: created?.eventId ?? "" }),
    [],
  );
});

Deno.test("audit() uses the audit retention stored in the system defaults", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  await repo.setSystemDefaults([Limit.perMinute("rpm", 10)], {
    auditRetentionDays: 7,
  });
  await repo.createEntity("e1");
  const [ev] = await repo.getAuditEvents("e1");
  const raw = await rawGet(
    env.client,
    repo.tableName,
    `${repo.namespaceId}/AUDIT#e1`,
    `#AUDIT#${ev?.eventId}`,
  );
  assert.equal(num(raw, "ttl"), START_S + 7 * 86400);
  // Replacing the limits keeps the retention (reference weakness 19).
  await repo.setSystemDefaults([Limit.perMinute("rpm", 20)], {
    onUnavailable: "block",
  });
  const system = await rawGet(
    env.client,
    repo.tableName,
    `${repo.namespaceId}/SYSTEM#`,
    "#CONFIG",
  );
  assert.equal(num(system, "audit_retention_days"), 7);
  assert.equal(text(system, "on_unavailable"), "block");
  assert.equal(num(system, "l_rpm_cp"), 20);
  assert.equal(num(system, "config_version"), 1);
  assert.deepEqual(await repo.getSystemDefaults(), {
    limits: [Limit.perMinute("rpm", 20)],
    onUnavailable: "block",
    auditRetentionDays: 7,
  });
});

// ------------------------------------------------------------ stored limits

Deno.test("setLimits() stores the entity config and counts each entity once per resource", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  const ns = repo.namespaceId;
  await repo.setLimits("e1", [
    Limit.perMinute("rpm", 100),
    Limit.perHour("tph", 5000, { burst: 6000 }),
  ], { resource: "openai/gpt-4" });
  const cfg = await rawGet(
    env.client,
    repo.tableName,
    `${ns}/ENTITY#e1`,
    "#CONFIG#openai/gpt-4",
  );
  assert.equal(text(cfg, "entity_id"), "e1");
  assert.equal(text(cfg, "resource"), "openai/gpt-4");
  assert.equal(num(cfg, "config_version"), 1);
  assert.equal(num(cfg, "l_rpm_cp"), 100);
  assert.equal(num(cfg, "l_rpm_ra"), 100);
  assert.equal(num(cfg, "l_rpm_rp"), 60);
  assert.equal(num(cfg, "l_tph_cp"), 6000);
  assert.equal(num(cfg, "l_tph_ra"), 5000);
  assert.equal(num(cfg, "l_tph_rp"), 3600);
  assert.equal(text(cfg, "GSI3PK"), `${ns}/ENTITY_CONFIG#openai/gpt-4`);
  assert.equal(text(cfg, "GSI3SK"), "e1");
  assert.equal(text(cfg, "GSI4PK"), ns);
  assert.equal(text(cfg, "GSI4SK"), `${ns}/ENTITY#e1`);
  assert.equal(hasAttr(cfg, "ttl"), false);

  const registry = async (): Promise<RawItem | undefined> =>
    await rawGet(
      env.client,
      repo.tableName,
      `${ns}/SYSTEM#`,
      "#ENTITY_CONFIG_RESOURCES",
    );
  assert.equal(num(await registry(), "openai/gpt-4"), 1);
  assert.equal(text(await registry(), "GSI4PK"), ns);

  // Overwriting does not count again.
  await repo.setLimits("e1", [Limit.perMinute("rpm", 50)], {
    resource: "openai/gpt-4",
  });
  assert.equal(num(await registry(), "openai/gpt-4"), 1);
  assert.deepEqual(
    await repo.getLimits("e1", { resource: "openai/gpt-4" }),
    [Limit.perMinute("rpm", 50)],
  );
  const overwritten = await rawGet(
    env.client,
    repo.tableName,
    `${ns}/ENTITY#e1`,
    "#CONFIG#openai/gpt-4",
  );
  assert.equal(hasAttr(overwritten, "l_tph_cp"), false, "full replacement");

  await repo.setLimits("e2", [Limit.perMinute("rpm", 10)], {
    resource: "openai/gpt-4",
  });
  assert.equal(num(await registry(), "openai/gpt-4"), 2);
  assert.deepEqual(await repo.listEntitiesWithCustomLimits("openai/gpt-4"), [
    "e1",
    "e2",
  ]);
  assert.deepEqual(await repo.listResourcesWithEntityConfigs(), [
    "openai/gpt-4",
  ]);

  await repo.deleteLimits("e1", { resource: "openai/gpt-4" });
  assert.equal(num(await registry(), "openai/gpt-4"), 1);
  await repo.deleteLimits("e1", { resource: "openai/gpt-4" });
  assert.equal(num(await registry(), "openai/gpt-4"), 1, "no double decrement");
  assert.equal(
    (await repo.getAuditEvents("e1")).filter((e) =>
      e.action === "limits_deleted"
    ).length,
    1,
    "deleting nothing writes no audit event",
  );
  await repo.deleteLimits("e2", { resource: "openai/gpt-4" });
  assert.equal(hasAttr(await registry(), "openai/gpt-4"), false);
  assert.deepEqual(await repo.listResourcesWithEntityConfigs(), []);
  assert.deepEqual(await repo.listEntitiesWithCustomLimits("openai/gpt-4"), []);
});

Deno.test("deleteLimits() reconciles the bucket to the limits now in effect", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  const limiter = new RateLimiter(repo);
  await repo.setResourceDefaults("api", [Limit.perMinute("rpm", 10)]);
  await repo.setLimits("e1", [
    Limit.perMinute("rpm", 5),
    Limit.perMinute("tpm", 100),
  ], { resource: "api" });
  await limiter.acquire(
    { entityId: "e1", resource: "api", consume: { rpm: 1, tpm: 10 } },
    () => {},
  );
  let item = await rawBucket(env.client, repo, "e1", "api");
  assert.equal(hasAttr(item, "ttl"), false);
  assert.equal(num(item, "b_tpm_tk"), 90_000);
  const rf = num(item, "rf");

  await repo.deleteLimits("e1", { resource: "api" });
  item = await rawBucket(env.client, repo, "e1", "api");
  assert.equal(num(item, "b_rpm_cp"), 10_000);
  assert.equal(num(item, "b_rpm_ra"), 10_000);
  assert.equal(num(item, "b_rpm_rp"), 60_000);
  assert.equal(num(item, "b_rpm_tk"), 4000, "tokens are not touched");
  assert.equal(num(item, "ttl"), START_S + 420);
  assert.equal(num(item, "rf"), rf);
  for (const f of ["tk", "cp", "ra", "rp", "tc"]) {
    assert.equal(hasAttr(item, `b_tpm_${f}`), false, `b_tpm_${f} removed`);
  }
  await limiter.acquire(
    { entityId: "e1", resource: "api", consume: { rpm: 1 } },
    () => {},
  );
  item = await rawBucket(env.client, repo, "e1", "api");
  assert.equal(num(item, "b_rpm_tk"), 3000);
  assert.equal(num(item, "b_rpm_cp"), 10_000);

  // Without any fallback level the bucket is left as it is.
  await repo.setLimits("e2", [Limit.perMinute("rpm", 5)], { resource: "solo" });
  await limiter.acquire(
    { entityId: "e2", resource: "solo", consume: { rpm: 1 } },
    () => {},
  );
  const before = await rawBucket(env.client, repo, "e2", "solo");
  await repo.deleteLimits("e2", { resource: "solo" });
  assert.deepEqual(await rawBucket(env.client, repo, "e2", "solo"), before);
});

Deno.test("setResourceDefaults() stores the resource config and its registry", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  const ns = repo.namespaceId;
  await repo.setResourceDefaults("openai/gpt-4", [Limit.perMinute("rpm", 30)]);
  await repo.setResourceDefaults("anthropic", [Limit.perDay("rpd", 1000)]);
  const cfg = await rawGet(
    env.client,
    repo.tableName,
    `${ns}/RESOURCE#openai/gpt-4`,
    "#CONFIG",
  );
  assert.equal(text(cfg, "resource"), "openai/gpt-4");
  assert.equal(num(cfg, "l_rpm_cp"), 30);
  assert.equal(num(cfg, "l_rpm_rp"), 60);
  assert.equal(num(cfg, "config_version"), 1);
  assert.equal(text(cfg, "GSI4PK"), ns);
  assert.equal(text(cfg, "GSI4SK"), `${ns}/RESOURCE#openai/gpt-4`);
  assert.equal(hasAttr(cfg, "GSI3PK"), false);
  const reg = await rawGet(
    env.client,
    repo.tableName,
    `${ns}/SYSTEM#`,
    "#RESOURCES",
  );
  assert.deepEqual(reg?.["resources"]?.SS?.slice().sort(), [
    "anthropic",
    "openai/gpt-4",
  ]);
  assert.deepEqual(await repo.listResourcesWithDefaults(), [
    "anthropic",
    "openai/gpt-4",
  ]);
  assert.deepEqual(await repo.getResourceDefaults("openai/gpt-4"), [
    Limit.perMinute("rpm", 30),
  ]);
  const [ev] = await repo.getAuditEvents("$RESOURCE:openai/gpt-4");
  assert.equal(ev?.action, "limits_set");
  assert.equal(ev?.resource, "openai/gpt-4");

  await repo.deleteResourceDefaults("openai/gpt-4");
  assert.equal(
    await rawGet(
      env.client,
      repo.tableName,
      `${ns}/RESOURCE#openai/gpt-4`,
      "#CONFIG",
    ),
    undefined,
  );
  assert.deepEqual(await repo.listResourcesWithDefaults(), ["anthropic"]);
  assert.deepEqual(await repo.getResourceDefaults("openai/gpt-4"), []);

  env.calls.reset();
  for (const bad of ["/gpt-4", "openai#gpt-4", "123api", ""]) {
    await assert.rejects(
      repo.setResourceDefaults(bad, [Limit.perMinute("rpm", 1)]),
      { name: "InvalidNameError", code: "INVALID_NAME", field: "resource" },
    );
  }
  await assert.rejects(
    repo.setLimits("e1", [Limit.perMinute("rpm", 1)], { resource: "/x" }),
    { name: "InvalidNameError", field: "resource" },
  );
  await assert.rejects(
    repo.setLimits("e1", [Limit.perMinute("rpm", 1), Limit.perHour("rpm", 2)]),
    { name: "ValidationError", field: "limits" },
  );
  assert.equal(writeCount(env.calls), 0);
});

// ------------------------------------------------------------ version

Deno.test("Repository.open() writes the version record on a new table", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const raw = await rawGet(
    env.client,
    env.repo.tableName,
    "_/SYSTEM#",
    "#VERSION",
  );
  assert.equal(text(raw, "schema_version"), SCHEMA_VERSION);
  assert.equal(text(raw, "client_min_version"), "0.0.0");
  assert.equal(text(raw, "updated_at"), START_ISO);
  assert.equal(text(raw, "GSI4PK"), "_");
  assert.equal(text(raw, "GSI4SK"), "_/SYSTEM#");
  const record = await env.repo.getVersionRecord();
  assert.equal(record?.schemaVersion, SCHEMA_VERSION);
  assert.equal(record?.clientMinVersion, "0.0.0");
});

Deno.test("Repository.open() refuses a table with an incompatible schema", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const stack = env.repo.tableName;
  for (const schemaVersion of ["0.9.0", "1.0.0"]) {
    await env.repo.setVersionRecord({ schemaVersion });
    const err = await Repository.open({ client: env.client, stack }).then(
      () => assert.fail("open must refuse"),
      (e) => e,
    );
    assert.ok(err instanceof IncompatibleSchemaError, String(err));
    assert.equal(err.code, "INCOMPATIBLE_SCHEMA");
    assert.equal(err.schemaVersion, schemaVersion);
    assert.equal(err.clientVersion, SCHEMA_VERSION);
  }
  // A patch of the same line is compatible.
  await env.repo.setVersionRecord({ schemaVersion: "0.10.7" });
  const ok = await Repository.open({ client: env.client, stack });
  assert.equal(ok.namespaceId, env.repo.namespaceId);
  // Tools that inspect old tables can skip the check.
  await env.repo.setVersionRecord({ schemaVersion: "0.9.0" });
  await Repository.open({ client: env.client, stack, skipVersionCheck: true });
});

Deno.test("Repository.open() refuses when the table requires a newer client", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const stack = env.repo.tableName;
  await env.repo.setVersionRecord({
    schemaVersion: SCHEMA_VERSION,
    clientMinVersion: "99.0.0",
  });
  const raw = await rawGet(env.client, stack, "_/SYSTEM#", "#VERSION");
  assert.equal(text(raw, "client_min_version"), "99.0.0");
  await assert.rejects(Repository.open({ client: env.client, stack }), (e) => {
    assert.ok(e instanceof MinimumClientVersionError, String(e));
    assert.equal(e.code, "MINIMUM_CLIENT_VERSION");
    assert.equal(e.minimumVersion, "99.0.0");
    return true;
  });
});

Deno.test("Repository.open() raises InfrastructureNotFoundError for a missing table without provision", async () => {
  const { client, calls } = await localClient();
  try {
    const stack = tableName("missing");
    await assert.rejects(Repository.open({ client, stack }), {
      name: "InfrastructureNotFoundError",
      code: "INFRASTRUCTURE_NOT_FOUND",
    });
    assert.equal(calls.counts.get("CreateTableCommand") ?? 0, 0);
    assert.equal(writeCount(calls), 0);
  } finally {
    client.destroy();
  }
});
