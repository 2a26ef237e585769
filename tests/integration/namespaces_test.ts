/**
 * Behavioural tests of namespaces against DynamoDB Local: resolution on
 * open, isolation of buckets, configs and the entity cache, and the
 * registry life cycle (register, delete, recover, purge).
 */
import assert from "node:assert/strict";
import {
  EntityNotFoundError,
  Limit,
  NamespaceNotFoundError,
  NamespaceStateError,
  RateLimiter,
  RateLimitExceeded,
  Repository,
} from "../../mod.ts";
import { freshRepo, manualClock } from "./_harness.ts";
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
const START_ISO = "2030-01-15T12:00:00Z";
const NS_ID = /^[A-Za-z0-9_][A-Za-z0-9_-]{10}$/;

function pkOf(item: RawItem): string {
  return text(item, "PK");
}

function byKey(a: RawItem, b: RawItem): number {
  const ka = `${pkOf(a)}|${text(a, "SK")}`;
  const kb = `${pkOf(b)}|${text(b, "SK")}`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

Deno.test("Repository.open() raises NamespaceNotFoundError for an unknown namespace unless asked to register it", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const stack = env.repo.tableName;
  env.calls.reset();
  await assert.rejects(
    Repository.open({ client: env.client, stack, namespace: "tenant-x" }),
    (e) => {
      assert.ok(e instanceof NamespaceNotFoundError, String(e));
      assert.equal(e.code, "NAMESPACE_NOT_FOUND");
      assert.equal(e.namespaceName, "tenant-x");
      assert.match(e.message, /tenant-x/);
      return true;
    },
  );
  assert.equal(writeCount(env.calls), 0, "nothing is registered");
  assert.equal(await env.repo.getNamespace("tenant-x"), null);
  await assert.rejects(env.repo.namespace("tenant-x"), NamespaceNotFoundError);

  const registered = await Repository.open({
    client: env.client,
    stack,
    namespace: "tenant-x",
    registerNamespace: true,
  });
  assert.equal(registered.namespaceName, "tenant-x");
  assert.match(registered.namespaceId, NS_ID);
  assert.notEqual(registered.namespaceId, env.repo.namespaceId);
  const info = await env.repo.getNamespace("tenant-x");
  assert.equal(info?.namespaceId, registered.namespaceId);
  assert.equal(info?.status, "active");

  const reopened = await Repository.open({
    client: env.client,
    stack,
    namespace: "tenant-x",
  });
  assert.equal(reopened.namespaceId, registered.namespaceId);
  const scoped = await env.repo.namespace("tenant-x");
  assert.equal(scoped.namespaceId, registered.namespaceId);

  await assert.rejects(
    Repository.open({ client: env.client, stack, namespace: "_" }),
    { name: "ValidationError", field: "namespace" },
  );
});

Deno.test("registerNamespace() is idempotent and writes forward and reverse records", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  const id = await repo.registerNamespace("tenant-a");
  assert.match(id, NS_ID);
  assert.ok(!id.startsWith("-"));
  assert.equal(await repo.registerNamespace("tenant-a"), id);

  const forward = await rawGet(
    env.client,
    repo.tableName,
    "_/SYSTEM#",
    "#NAMESPACE#tenant-a",
  );
  const reverse = await rawGet(
    env.client,
    repo.tableName,
    "_/SYSTEM#",
    `#NSID#${id}`,
  );
  for (const r of [forward, reverse]) {
    assert.equal(text(r, "namespace_id"), id);
    assert.equal(text(r, "namespace_name"), "tenant-a");
    assert.equal(text(r, "status"), "active");
    assert.equal(text(r, "created_at"), START_ISO);
    assert.equal(text(r, "GSI4PK"), "_");
    assert.equal(text(r, "GSI4SK"), "_/SYSTEM#");
  }
  const names = (await repo.listNamespaces()).map((n) => n.name);
  assert.deepEqual(names, ["default", "tenant-a"]);
  await assert.rejects(repo.registerNamespace("_"), {
    name: "ValidationError",
    code: "VALIDATION_FAILED",
    field: "namespace",
  });
});

Deno.test("namespace() keeps buckets, configs and entities of two namespaces apart", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const main = env.repo;
  await main.registerNamespace("tenant-a");
  await main.registerNamespace("tenant-b");
  const a = await main.namespace("tenant-a");
  const b = await main.namespace("tenant-b");
  assert.equal(a.namespaceName, "tenant-a");
  assert.equal(a.tableName, main.tableName);
  assert.notEqual(a.namespaceId, main.namespaceId);

  await main.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  await a.setSystemDefaults([Limit.perMinute("rpm", 3)]);
  // In tenant-a, u1 is a cascading child of org; in the default namespace it is nobody.
  await a.createEntity("org");
  await a.createEntity("u1", { parentId: "org", cascade: true });

  const inMain = new RateLimiter(main);
  const inA = new RateLimiter(a);
  const inB = new RateLimiter(b);
  for (let i = 0; i < 3; i++) {
    await inA.acquire(
      { entityId: "u1", resource: "api", consume: { rpm: 1 } },
      () => {},
    );
  }
  await assert.rejects(
    inA.acquire(
      { entityId: "u1", resource: "api", consume: { rpm: 1 } },
      () => {},
    ),
    RateLimitExceeded,
  );
  for (let i = 0; i < 2; i++) {
    const lease = await inMain.acquire(
      { entityId: "u1", resource: "api", consume: { rpm: 1 } },
      (l) => l,
    );
    assert.equal(
      lease.entries.length,
      1,
      "no cascade in the default namespace",
    );
  }

  const bucketA = await rawBucket(env.client, a, "u1", "api");
  const bucketMain = await rawBucket(env.client, main, "u1", "api");
  assert.equal(text(bucketA, "PK"), `${a.namespaceId}/BUCKET#u1#api#0`);
  assert.equal(text(bucketMain, "PK"), `${main.namespaceId}/BUCKET#u1#api#0`);
  assert.equal(num(bucketA, "b_rpm_tk"), 0);
  assert.equal(num(bucketA, "b_rpm_cp"), 3000);
  assert.equal(bucketA?.["cascade"]?.BOOL, true);
  assert.equal(text(bucketA, "GSI4PK"), a.namespaceId);
  assert.equal(num(bucketMain, "b_rpm_tk"), 8000);
  assert.equal(num(bucketMain, "b_rpm_cp"), 10_000);
  assert.equal(bucketMain?.["cascade"]?.BOOL, false);
  assert.equal(text(bucketMain, "GSI4PK"), main.namespaceId);
  assert.equal(
    num(await rawBucket(env.client, a, "org", "api"), "b_rpm_tk"),
    0,
  );
  assert.equal(await rawBucket(env.client, main, "org", "api"), undefined);

  // tenant-b has no limits of its own: nothing leaks from the other namespaces.
  await assert.rejects(
    inB.acquire({ entityId: "u1", resource: "api", consume: { rpm: 1 } }),
    { name: "ValidationError", field: "limits" },
  );
  assert.equal(await rawBucket(env.client, b, "u1", "api"), undefined);
  assert.equal(await b.getEntity("u1"), null);
  assert.deepEqual(await b.getAuditEvents("u1"), []);
  assert.equal((await a.getAuditEvents("u1"))[0]?.action, "entity_created");

  const all = await scanAll(env.client, main.tableName);
  const buckets = all.filter((i) => text(i, "SK") === "#STATE");
  assert.deepEqual(
    buckets.map(pkOf).sort(),
    [
      `${main.namespaceId}/BUCKET#u1#api#0`,
      `${a.namespaceId}/BUCKET#org#api#0`,
      `${a.namespaceId}/BUCKET#u1#api#0`,
    ].sort(),
  );
});

Deno.test("deleteNamespace() soft-deletes and recoverNamespace() restores the same id and data", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const main = env.repo;
  const id = await main.registerNamespace("tenant-a");
  const a = await main.namespace("tenant-a");
  await a.setSystemDefaults([Limit.perMinute("rpm", 5)]);
  await new RateLimiter(a).acquire(
    { entityId: "u1", resource: "api", consume: { rpm: 2 } },
    () => {},
  );

  clock.advance(60_000);
  await main.deleteNamespace("tenant-a");
  assert.equal(await main.getNamespace("tenant-a"), null);
  assert.deepEqual((await main.listNamespaces()).map((n) => n.name), [
    "default",
  ]);
  const orphans = await main.listOrphanNamespaces();
  assert.equal(orphans.length, 1);
  assert.equal(orphans[0]?.namespaceId, id);
  assert.equal(orphans[0]?.name, "tenant-a");
  assert.equal(orphans[0]?.deletedAt, "2030-01-15T12:01:00Z");
  assert.equal(
    await rawGet(
      env.client,
      main.tableName,
      "_/SYSTEM#",
      "#NAMESPACE#tenant-a",
    ),
    undefined,
  );
  const reverse = await rawGet(
    env.client,
    main.tableName,
    "_/SYSTEM#",
    `#NSID#${id}`,
  );
  assert.equal(text(reverse, "status"), "deleted");
  await assert.rejects(main.namespace("tenant-a"), NamespaceNotFoundError);
  await assert.rejects(
    Repository.open({
      client: env.client,
      stack: main.tableName,
      namespace: "tenant-a",
    }),
    NamespaceNotFoundError,
  );
  assert.equal(
    num(await rawBucket(env.client, a, "u1", "api"), "b_rpm_tk"),
    3000,
    "soft delete keeps the data",
  );
  // Deleting an unknown name is a no-op.
  await main.deleteNamespace("never-registered");

  assert.equal(await main.recoverNamespace(id), "tenant-a");
  const info = await main.getNamespace("tenant-a");
  assert.equal(info?.namespaceId, id);
  assert.equal(info?.createdAt, START_ISO, "original created_at");
  const restored = await rawGet(
    env.client,
    main.tableName,
    "_/SYSTEM#",
    `#NSID#${id}`,
  );
  assert.equal(text(restored, "status"), "active");
  assert.equal("deleted_at" in (restored ?? {}), false);
  assert.deepEqual(await main.listOrphanNamespaces(), []);
  const again = await main.namespace("tenant-a");
  assert.equal(again.namespaceId, id);
  assert.deepEqual(
    await new RateLimiter(again).available({ entityId: "u1", resource: "api" }),
    { rpm: 5 },
    "3 left plus 2 refilled in a minute",
  );

  await assert.rejects(main.recoverNamespace(id), (e) => {
    assert.ok(e instanceof NamespaceStateError, String(e));
    assert.equal(e.code, "NAMESPACE_STATE");
    assert.equal(e.state, "active");
    return true;
  });
  await assert.rejects(
    main.recoverNamespace("AAAAAAAAAAA"),
    EntityNotFoundError,
  );
});

Deno.test("registering a deleted name again gives a new id and the old id cannot be recovered", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const main = env.repo;
  const oldId = await main.registerNamespace("tenant-a");
  await main.deleteNamespace("tenant-a");
  const newId = await main.registerNamespace("tenant-a");
  assert.notEqual(newId, oldId);
  assert.equal((await main.namespace("tenant-a")).namespaceId, newId);
  await assert.rejects(main.recoverNamespace(oldId), (e) => {
    assert.ok(e instanceof NamespaceStateError, String(e));
    assert.equal(e.state, "re-registered");
    return true;
  });
  assert.equal((await main.getNamespace("tenant-a"))?.namespaceId, newId);
});

Deno.test("purgeNamespace() removes every item of that namespace and nothing of the others", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const main = env.repo;
  const idA = await main.registerNamespace("tenant-a");
  const idB = await main.registerNamespace("tenant-b");
  const a = await main.namespace("tenant-a");
  const b = await main.namespace("tenant-b");
  for (const repo of [main, a, b]) {
    await repo.setSystemDefaults([Limit.perMinute("rpm", 10)], {
      onUnavailable: "block",
    });
    await repo.setResourceDefaults("openai/gpt-4", [
      Limit.perMinute("rpm", 5),
    ]);
    await repo.createEntity("org");
    await repo.createEntity("u1", { parentId: "org", cascade: true });
    await repo.setLimits("u1", [Limit.perMinute("rpm", 4)], {
      resource: "api",
    });
    await repo.setLimits("u2", [Limit.perMinute("rpm", 4)]);
    const limiter = new RateLimiter(repo);
    for (const resource of ["api", "openai/gpt-4"]) {
      for (const entityId of ["u1", "u2"]) {
        await limiter.acquire(
          { entityId, resource, consume: { rpm: 1 } },
          (lease) => lease.adjust({ rpm: 1 }),
        );
      }
    }
    await repo.createEntity("gone");
    await repo.deleteEntity("gone");
  }
  const before = (await scanAll(env.client, main.tableName)).sort(byKey);
  const ofA = before.filter((i) => pkOf(i).startsWith(`${idA}/`));
  const others = before.filter((i) => !pkOf(i).startsWith(`${idA}/`));
  assert.ok(ofA.length >= 15, `tenant-a holds ${ofA.length} items`);
  assert.ok(others.some((i) => pkOf(i).startsWith(`${idB}/`)));

  await assert.rejects(main.purgeNamespace(idA), {
    name: "NamespaceStateError",
    state: "active",
  });
  assert.equal(
    (await scanAll(env.client, main.tableName)).length,
    before.length,
    "an active namespace is not purged",
  );

  await main.deleteNamespace("tenant-a");
  const progress: number[] = [];
  const deleted = await main.purgeNamespace(idA, (n) => progress.push(n));
  assert.equal(deleted, ofA.length);
  assert.equal(progress.at(-1), ofA.length);

  const after = (await scanAll(env.client, main.tableName)).sort(byKey);
  assert.deepEqual(
    after.filter((i) => pkOf(i).startsWith(`${idA}/`)).map(pkOf),
    [],
    "no item of tenant-a is left",
  );
  // The registry records of tenant-a change with delete and purge; everything else must not.
  const registryOfA = (i: RawItem): boolean =>
    pkOf(i) === "_/SYSTEM#" &&
    (text(i, "SK") === `#NSID#${idA}` ||
      text(i, "SK") === "#NAMESPACE#tenant-a");
  const othersAfter = after.filter((i) => !registryOfA(i));
  const othersBefore = others.filter((i) => !registryOfA(i));
  assert.ok(othersBefore.length > 20);
  assert.deepEqual(othersAfter, othersBefore, "other namespaces untouched");
  assert.equal(
    await rawGet(env.client, main.tableName, "_/SYSTEM#", `#NSID#${idA}`),
    undefined,
    "the reverse record is removed",
  );
  assert.deepEqual(await main.listOrphanNamespaces(), []);
  await assert.rejects(main.recoverNamespace(idA), EntityNotFoundError);
  assert.equal(await main.purgeNamespace(idA), 0, "purging twice is a no-op");

  // The other tenants still work.
  await new RateLimiter(b).acquire(
    { entityId: "u1", resource: "api", consume: { rpm: 1 } },
    () => {},
  );
  assert.equal(
    num(await rawBucket(env.client, b, "u1", "api"), "b_rpm_tk"),
    1000,
  );
});
