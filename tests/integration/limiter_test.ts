/**
 * Behavioural tests of `RateLimiter` against DynamoDB Local: admission,
 * cascade, leases, limit resolution and its cache, bucket TTL, config
 * changes, names, outages, capacity queries and input validation. Every
 * test checks the stored items as well as the returned values.
 */
import assert from "node:assert/strict";
import {
  InvalidIdentifierError,
  InvalidNameError,
  type Lease,
  LeaseExpiredError,
  Limit,
  type LimitStatus,
  parseBucketPk,
  RateLimiter,
  RateLimiterUnavailable,
  RateLimitExceeded,
  Repository,
  RequestExceedsCapacity,
  ValidationError,
} from "../../mod.ts";
import { freshRepo, manualClock } from "./_harness.ts";
import {
  breakable,
  num,
  rawBucket,
  type RawItem,
  text,
  writeCount,
} from "./_stored.ts";

/** Clock start: in the future, so bucket `ttl` values are never in the past for DynamoDB Local. */
const START = Date.UTC(2030, 0, 15, 12, 0, 0);
const START_S = START / 1000;

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  assert.fail("expected a rejection");
}

function byName(
  statuses: readonly LimitStatus[],
  entityId: string,
  limitName: string,
): LimitStatus {
  const s = statuses.find((x) =>
    x.entityId === entityId && x.limitName === limitName
  );
  assert.ok(s, `no status for ${entityId}/${limitName}`);
  return s;
}

function hasAttr(item: RawItem | undefined, attr: string): boolean {
  return item !== undefined && attr in item;
}

// ------------------------------------------------------------ all or nothing

async function checkAllOrNothing(speculativeWrites: boolean): Promise<void> {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const limiter = new RateLimiter(env.repo, { speculativeWrites });
  await env.repo.setSystemDefaults([
    Limit.perMinute("rpm", 10),
    Limit.perMinute("tpm", 100),
  ]);
  await limiter.acquire({
    entityId: "u1",
    resource: "api",
    consume: { rpm: 1, tpm: 50 },
  }, () => {});
  const before = await rawBucket(env.client, env.repo, "u1", "api");
  assert.equal(num(before, "b_rpm_tk"), 9000);
  assert.equal(num(before, "b_tpm_tk"), 50000);

  let bodyRan = false;
  const err = await rejection(limiter.acquire({
    entityId: "u1",
    resource: "api",
    consume: { rpm: 1, tpm: 60 },
  }, () => {
    bodyRan = true;
  }));
  assert.ok(err instanceof RateLimitExceeded, String(err));
  assert.equal(err.code, "RATE_LIMIT_EXCEEDED");
  assert.equal(bodyRan, false);
  assert.deepEqual(
    err.statuses.map((s) => s.limitName).sort(),
    ["rpm", "tpm"],
  );
  const rpm = byName(err.statuses, "u1", "rpm");
  const tpm = byName(err.statuses, "u1", "tpm");
  assert.equal(rpm.exceeded, false);
  assert.equal(rpm.available, 9);
  assert.equal(rpm.requested, 1);
  assert.equal(tpm.exceeded, true);
  assert.equal(tpm.available, 50);
  assert.equal(tpm.requested, 60);
  assert.equal(tpm.resource, "api");
  // 10 000 millitokens short at 100 000 per 60 000 ms: 6000 ms, plus 1 ms,
  // counted from the end of the new bucket's holdback (600 ms: 1% of tpm).
  assert.equal(tpm.retryAfterSeconds, 6.601);
  assert.equal(err.retryAfterSeconds, 6.601);
  assert.deepEqual(err.violations.map((v) => v.limitName), ["tpm"]);
  assert.deepEqual(err.passed.map((v) => v.limitName), ["rpm"]);

  const after = await rawBucket(env.client, env.repo, "u1", "api");
  assert.deepEqual(after, before, "a refused acquire must write nothing");
}

Deno.test("acquire() charges no limit when the second limit refuses (fast path)", async () => {
  await checkAllOrNothing(true);
});

Deno.test("acquire() charges no limit when the second limit refuses (slow path)", async () => {
  await checkAllOrNothing(false);
});

// ------------------------------------------------------------ cascade

async function checkCascade(speculativeWrites: boolean): Promise<void> {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const limiter = new RateLimiter(env.repo, { speculativeWrites });
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  await env.repo.createEntity("org");
  await env.repo.createEntity("key1", { parentId: "org", cascade: true });
  await env.repo.setLimits("org", [Limit.perMinute("rpm", 3)], {
    resource: "api",
  });

  const lease = await limiter.acquire(
    { entityId: "key1", resource: "api", consume: { rpm: 1 } },
    (l) => l,
  );
  assert.equal(lease.entries.length, 2);
  assert.deepEqual(lease.consumed, { rpm: 2 }, "child and parent add up");
  let child = await rawBucket(env.client, env.repo, "key1", "api");
  let parent = await rawBucket(env.client, env.repo, "org", "api");
  assert.equal(num(child, "b_rpm_tk"), 9000);
  assert.equal(num(child, "b_rpm_cp"), 10000);
  assert.equal(child?.["cascade"]?.BOOL, true);
  assert.equal(text(child, "parent_id"), "org");
  assert.equal(num(parent, "b_rpm_tk"), 2000);
  assert.equal(num(parent, "b_rpm_cp"), 3000);
  assert.equal(hasAttr(parent, "ttl"), false, "parent uses an entity config");
  assert.equal(hasAttr(child, "ttl"), true, "child uses the system default");

  for (let i = 0; i < 2; i++) {
    await limiter.acquire({
      entityId: "key1",
      resource: "api",
      consume: { rpm: 1 },
    }, () => {});
  }
  child = await rawBucket(env.client, env.repo, "key1", "api");
  parent = await rawBucket(env.client, env.repo, "org", "api");
  assert.equal(num(child, "b_rpm_tk"), 7000);
  assert.equal(num(parent, "b_rpm_tk"), 0);

  const err = await rejection(limiter.acquire({
    entityId: "key1",
    resource: "api",
    consume: { rpm: 1 },
  }, () => assert.fail("body must not run")));
  assert.ok(err instanceof RateLimitExceeded, String(err));
  const childStatus = byName(err.statuses, "key1", "rpm");
  const parentStatus = byName(err.statuses, "org", "rpm");
  assert.equal(childStatus.exceeded, false);
  assert.equal(childStatus.requested, 1);
  assert.equal(childStatus.limit.capacity, 10);
  assert.equal(
    childStatus.available,
    7,
    "the child's status reports the child's available tokens",
  );
  assert.equal(parentStatus.exceeded, true);
  assert.equal(parentStatus.available, 0);
  assert.equal(parentStatus.limit.capacity, 3);
  // 20 s per token, from the end of the new bucket's 600 ms holdback.
  assert.equal(parentStatus.retryAfterSeconds, 20.601);
  assert.equal(err.primaryViolation.entityId, "org");

  child = await rawBucket(env.client, env.repo, "key1", "api");
  parent = await rawBucket(env.client, env.repo, "org", "api");
  assert.equal(num(child, "b_rpm_tk"), 7000, "child not charged");
  assert.equal(num(child, "b_rpm_tc"), 3000, "child's counter is net");
  assert.equal(num(parent, "b_rpm_tk"), 0);
  assert.equal(num(parent, "b_rpm_tc"), 3000);

  // A rolled-back cascade lease gives back to both.
  // Waiting the reported Retry-After refills the parent's token.
  clock.advance(Math.round(err.retryAfterSeconds * 1000));
  const boom = new Error("body failed");
  await assert.rejects(
    limiter.acquire({
      entityId: "key1",
      resource: "api",
      consume: { rpm: 1 },
    }, () => {
      throw boom;
    }),
    (e) => e === boom,
  );
  child = await rawBucket(env.client, env.repo, "key1", "api");
  parent = await rawBucket(env.client, env.repo, "org", "api");
  assert.equal(num(child, "b_rpm_tc"), 3000);
  assert.equal(num(parent, "b_rpm_tc"), 3000);
  assert.equal(
    (await limiter.available({ entityId: "org", resource: "api" })).rpm,
    1,
  );
}

Deno.test("acquire() charges a cascading child and its parent together (fast path)", async () => {
  await checkCascade(true);
});

Deno.test("acquire() charges a cascading child and its parent together (slow path)", async () => {
  await checkCascade(false);
});

Deno.test("acquire() never touches the parent bucket when cascade is off", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const limiter = new RateLimiter(env.repo);
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  await env.repo.createEntity("org");
  await env.repo.createEntity("key2", { parentId: "org" });

  await limiter.acquire({
    entityId: "key2",
    resource: "api",
    consume: { rpm: 1 },
  }, () => {});
  assert.equal(await rawBucket(env.client, env.repo, "org", "api"), undefined);

  await limiter.acquire({
    entityId: "org",
    resource: "api",
    consume: { rpm: 2 },
  }, () => {});
  const orgBefore = await rawBucket(env.client, env.repo, "org", "api");
  for (let i = 0; i < 3; i++) {
    const lease = await limiter.acquire(
      { entityId: "key2", resource: "api", consume: { rpm: 1 } },
      (l) => l,
    );
    assert.equal(lease.entries.length, 1);
    assert.ok(lease.entries.every((e) => e.ref.entityId === "key2"));
  }
  const child = await rawBucket(env.client, env.repo, "key2", "api");
  assert.equal(num(child, "b_rpm_tk"), 6000);
  assert.equal(child?.["cascade"]?.BOOL, false);
  assert.deepEqual(
    await rawBucket(env.client, env.repo, "org", "api"),
    orgBefore,
  );
});

// ------------------------------------------------------------ leases

Deno.test("acquire() returns the body's value and commits the consumption", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const limiter = new RateLimiter(env.repo);
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  const value = await limiter.acquire(
    { entityId: "u1", resource: "api", consume: { rpm: 2 } },
    async (lease) => {
      await Promise.resolve();
      assert.equal(lease.state, "open");
      assert.deepEqual(lease.consumed, { rpm: 2 });
      return { answer: 42 };
    },
  );
  assert.deepEqual(value, { answer: 42 });
  const item = await rawBucket(env.client, env.repo, "u1", "api");
  assert.equal(num(item, "b_rpm_tk"), 8000);
  assert.equal(num(item, "b_rpm_tc"), 2000);
});

Deno.test("acquire() rolls back when the body throws and rethrows the error", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  await env.repo.setSystemDefaults([
    Limit.perMinute("rpm", 10),
    Limit.perMinute("tpm", 1000),
  ]);
  for (const speculativeWrites of [true, false]) {
    const limiter = new RateLimiter(env.repo, { speculativeWrites });
    const entityId = `u-${speculativeWrites}`;
    await limiter.acquire(
      { entityId, resource: "api", consume: { rpm: 1, tpm: 100 } },
      () => {},
    );
    const before = await rawBucket(env.client, env.repo, entityId, "api");
    const boom = new Error("model call failed");
    let seen: Lease | undefined;
    await assert.rejects(
      limiter.acquire(
        { entityId, resource: "api", consume: { rpm: 3, tpm: 200 } },
        async (lease) => {
          seen = lease;
          await lease.consume({ tpm: 50 });
          lease.adjust({ tpm: 500 });
          throw boom;
        },
      ),
      (e) => e === boom,
    );
    assert.equal(seen?.state, "rolled_back");
    const after = await rawBucket(env.client, env.repo, entityId, "api");
    assert.equal(num(after, "b_rpm_tk"), num(before, "b_rpm_tk"));
    assert.equal(num(after, "b_tpm_tk"), num(before, "b_tpm_tk"));
    assert.equal(num(after, "b_rpm_tc"), num(before, "b_rpm_tc"));
    assert.equal(num(after, "b_tpm_tc"), num(before, "b_tpm_tc"));
    assert.equal(num(after, "b_rpm_tk"), 9000);
    assert.equal(num(after, "b_tpm_tk"), 900_000);
  }
});

Deno.test("acquire() without a body returns a lease that rolls back on disposal unless committed", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const limiter = new RateLimiter(env.repo);
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 10)]);

  let held: Lease | undefined;
  {
    await using lease = await limiter.acquire({
      entityId: "u1",
      resource: "api",
      consume: { rpm: 2 },
    });
    held = lease;
    assert.equal(lease.state, "open");
    const during = await rawBucket(env.client, env.repo, "u1", "api");
    assert.equal(num(during, "b_rpm_tk"), 8000, "consumed on enter");
  }
  assert.equal(held.state, "rolled_back");
  let item = await rawBucket(env.client, env.repo, "u1", "api");
  assert.equal(num(item, "b_rpm_tk"), 10000);
  assert.equal(num(item, "b_rpm_tc"), 0);

  {
    await using lease = await limiter.acquire({
      entityId: "u1",
      resource: "api",
      consume: { rpm: 2 },
    });
    held = lease;
    lease.adjust({ rpm: 1 });
    await lease.commit();
  }
  assert.equal(held.state, "committed");
  item = await rawBucket(env.client, env.repo, "u1", "api");
  assert.equal(num(item, "b_rpm_tk"), 7000);
  assert.equal(num(item, "b_rpm_tc"), 3000);
});

Deno.test("Lease.adjust() can put the bucket into debt and the next acquire waits for it", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const limiter = new RateLimiter(env.repo);
  await env.repo.setSystemDefaults([Limit.perMinute("tpm", 100)]);
  await limiter.acquire(
    { entityId: "u1", resource: "llm", consume: { tpm: 10 } },
    (lease) => {
      lease.adjust({ tpm: 150 });
    },
  );
  const item = await rawBucket(env.client, env.repo, "u1", "llm");
  assert.equal(num(item, "b_tpm_tk"), -60_000);
  assert.equal(num(item, "b_tpm_tc"), 160_000);
  assert.deepEqual(
    await limiter.available({ entityId: "u1", resource: "llm" }),
    { tpm: -60 },
  );

  const err = await rejection(limiter.acquire({
    entityId: "u1",
    resource: "llm",
    consume: { tpm: 1 },
  }, () => {}));
  assert.ok(err instanceof RateLimitExceeded, String(err));
  // 61 000 millitokens short at 100 000 per 60 000 ms, from the end of the
  // new bucket's holdback (600 ms).
  assert.equal(err.retryAfterSeconds, 37.201);
  assert.equal(err.violations[0]?.available, -60);

  // A limiter without a refusal cache asks DynamoDB every time.
  const probe = new RateLimiter(env.repo, { refusalCacheSize: 0 });
  clock.advance(37_199);
  await assert.rejects(
    probe.acquire({
      entityId: "u1",
      resource: "llm",
      consume: { tpm: 1 },
    }, () => {}),
    RateLimitExceeded,
  );
  assert.deepEqual(
    await limiter.available({ entityId: "u1", resource: "llm" }),
    { tpm: 0 },
  );
  clock.advance(1);
  assert.deepEqual(
    await limiter.available({ entityId: "u1", resource: "llm" }),
    { tpm: 1 },
    "the debt is repaid exactly 37.2 s later",
  );
  assert.equal(
    await limiter.timeUntilAvailable({
      entityId: "u1",
      resource: "llm",
      needed: { tpm: 1 },
    }),
    0,
  );
  // Waiting the full Retry-After admits the request.
  clock.advance(1);
  await limiter.acquire({
    entityId: "u1",
    resource: "llm",
    consume: { tpm: 1 },
  }, () => {});
  const after = await rawBucket(env.client, env.repo, "u1", "llm");
  assert.equal(
    num(after, "b_tpm_tk"),
    1,
    "61 001 refilled, 61 000 owed, 1000 taken",
  );
  assert.equal(num(after, "b_tpm_tc"), 161_000);
});

Deno.test("Lease.consume() beyond what is left refuses and changes nothing", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const limiter = new RateLimiter(env.repo);
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 5)]);
  await using lease = await limiter.acquire({
    entityId: "u1",
    resource: "api",
    consume: { rpm: 1 },
  });
  const err = await rejection(lease.consume({ rpm: 10 }));
  assert.ok(err instanceof RateLimitExceeded, String(err));
  assert.equal(err.violations[0]?.limitName, "rpm");
  assert.equal(err.violations[0]?.available, 4);
  assert.equal(err.violations[0]?.requested, 10);
  assert.deepEqual(lease.consumed, { rpm: 1 });
  let item = await rawBucket(env.client, env.repo, "u1", "api");
  assert.equal(num(item, "b_rpm_tk"), 4000);
  assert.equal(num(item, "b_rpm_tc"), 1000);
  assert.equal(lease.state, "open");

  await lease.consume({ rpm: 4 });
  assert.deepEqual(lease.consumed, { rpm: 5 });
  await lease.commit();
  item = await rawBucket(env.client, env.repo, "u1", "api");
  assert.equal(num(item, "b_rpm_tk"), 0);
  assert.equal(num(item, "b_rpm_tc"), 5000);
});

Deno.test("Lease.consume() and adjust() raise LeaseExpiredError after the lease is closed", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const limiter = new RateLimiter(env.repo);
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  const committed = await limiter.acquire(
    { entityId: "u1", resource: "api", consume: { rpm: 1 } },
    (l) => l,
  );
  assert.equal(committed.state, "committed");
  await assert.rejects(committed.consume({ rpm: 1 }), {
    name: "LeaseExpiredError",
    code: "LEASE_EXPIRED",
  });
  assert.throws(() => committed.adjust({ rpm: 1 }), LeaseExpiredError);
  assert.throws(() => committed.release({ rpm: 1 }), LeaseExpiredError);

  let rolledBack: Lease | undefined;
  await assert.rejects(
    limiter.acquire(
      { entityId: "u1", resource: "api", consume: { rpm: 1 } },
      (l) => {
        rolledBack = l;
        throw new Error("x");
      },
    ),
    { message: "x" },
  );
  assert.ok(rolledBack);
  await assert.rejects(rolledBack.consume({ rpm: 1 }), LeaseExpiredError);
  assert.throws(() => rolledBack?.adjust({ rpm: -1 }), LeaseExpiredError);
  await assert.rejects(rolledBack.commit(), LeaseExpiredError);

  const item = await rawBucket(env.client, env.repo, "u1", "api");
  assert.equal(num(item, "b_rpm_tk"), 9000);
  assert.equal(num(item, "b_rpm_tc"), 1000);
});

Deno.test("Lease.release() gives tokens back on commit", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const limiter = new RateLimiter(env.repo);
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  await limiter.acquire(
    { entityId: "u1", resource: "api", consume: { rpm: 3 } },
    (lease) => {
      lease.release({ rpm: 2 });
      assert.deepEqual(lease.consumed, { rpm: 1 });
    },
  );
  const item = await rawBucket(env.client, env.repo, "u1", "api");
  assert.equal(num(item, "b_rpm_tk"), 9000);
  assert.equal(num(item, "b_rpm_tc"), 1000);
});

// ------------------------------------------------------------ limit resolution

Deno.test("acquire() resolves limits: entity+resource > entity default > resource > system, override beats all", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  const limiter = new RateLimiter(repo);
  await repo.setSystemDefaults([Limit.perMinute("rpm", 100)]);
  await repo.setResourceDefaults("api", [Limit.perMinute("rpm", 50)]);
  await repo.setLimits("e1", [Limit.perMinute("rpm", 20)]);
  await repo.setLimits("e1", [Limit.perMinute("rpm", 10)], {
    resource: "api",
  });
  await repo.setLimits("e2", [Limit.perMinute("rpm", 20)]);

  const cases: [string, string, string, number][] = [
    ["e1", "api", "entity", 10],
    ["e1", "other", "entity_default", 20],
    ["e2", "api", "entity_default", 20],
    ["e3", "api", "resource", 50],
    ["e3", "other", "system", 100],
  ];
  for (const [entityId, resource, source, capacity] of cases) {
    const r = await repo.resolveLimits(entityId, resource);
    assert.equal(r?.source, source, `${entityId}/${resource}`);
    assert.equal(r?.limits[0]?.capacity, capacity, `${entityId}/${resource}`);
    await limiter.acquire(
      { entityId, resource, consume: { rpm: 1 } },
      () => {},
    );
    const item = await rawBucket(env.client, repo, entityId, resource);
    assert.equal(num(item, "b_rpm_cp"), capacity * 1000, entityId + resource);
    assert.equal(num(item, "b_rpm_tk"), (capacity - 1) * 1000);
  }

  const lease = await limiter.acquire({
    entityId: "e1",
    resource: "fresh",
    consume: { rpm: 1 },
    limits: [Limit.perMinute("rpm", 7)],
  }, (l) => l);
  assert.equal(lease.entries[0]?.limit.capacity, 7);
  const overridden = await rawBucket(env.client, repo, "e1", "fresh");
  assert.equal(num(overridden, "b_rpm_cp"), 7000);
  assert.equal(num(overridden, "b_rpm_tk"), 6000);
  assert.equal(num(overridden, "ttl"), START_S + 420, "override is not custom");

  // Removing levels falls back one level at a time.
  await repo.deleteLimits("e1", { resource: "api" });
  assert.equal(
    (await repo.resolveLimits("e1", "api"))?.source,
    "entity_default",
  );
  await repo.deleteLimits("e1");
  assert.equal((await repo.resolveLimits("e1", "api"))?.source, "resource");
  await repo.deleteResourceDefaults("api");
  assert.equal((await repo.resolveLimits("e1", "api"))?.source, "system");
  await repo.deleteSystemDefaults();
  assert.equal(await repo.resolveLimits("e1", "api"), null);
  await assert.rejects(
    limiter.acquire({ entityId: "e9", resource: "api", consume: { rpm: 1 } }),
    { name: "ValidationError", code: "VALIDATION_FAILED", field: "limits" },
  );
  assert.equal(await rawBucket(env.client, repo, "e9", "api"), undefined);
});

Deno.test("acquire() keeps using a cached resource default until invalidateConfigCache() or the TTL passes", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock, configCacheTtlSeconds: 60 });
  const writer = await Repository.open({
    client: env.client,
    stack: env.repo.tableName,
    clock,
  });
  const limiter = new RateLimiter(env.repo);
  const cp = async (entityId: string): Promise<number> => {
    await limiter.acquire(
      { entityId, resource: "api", consume: { rpm: 1 } },
      () => {},
    );
    return num(
      await rawBucket(env.client, env.repo, entityId, "api"),
      "b_rpm_cp",
    );
  };

  await writer.setResourceDefaults("api", [Limit.perMinute("rpm", 10)]);
  assert.equal(await cp("u1"), 10_000);
  await writer.setResourceDefaults("api", [Limit.perMinute("rpm", 20)]);
  assert.equal(await cp("u2"), 10_000, "still cached");
  env.repo.invalidateConfigCache();
  assert.equal(await cp("u3"), 20_000, "seen after invalidation");

  await writer.setResourceDefaults("api", [Limit.perMinute("rpm", 30)]);
  clock.advance(59_000);
  assert.equal(await cp("u4"), 20_000, "still within the TTL");
  clock.advance(1_001);
  assert.equal(await cp("u5"), 30_000, "seen after the TTL");
});

Deno.test("setLimits() and deleteLimits() take effect at once despite the cache", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock, configCacheTtlSeconds: 600 });
  const repo = env.repo;
  const limiter = new RateLimiter(repo);
  await repo.setResourceDefaults("api", [Limit.perMinute("rpm", 50)]);
  // Cache "no entity config" for u1.
  assert.equal((await repo.resolveLimits("u1", "api"))?.source, "resource");

  await repo.setLimits("u1", [Limit.perMinute("rpm", 6)]);
  let r = await repo.resolveLimits("u1", "api");
  assert.equal(r?.source, "entity_default");
  assert.equal(r?.limits[0]?.capacity, 6);

  await repo.setLimits("u1", [Limit.perMinute("rpm", 5)], { resource: "api" });
  r = await repo.resolveLimits("u1", "api");
  assert.equal(r?.source, "entity");
  assert.equal(r?.limits[0]?.capacity, 5);
  await limiter.acquire({
    entityId: "u1",
    resource: "api",
    consume: { rpm: 1 },
  }, () => {});
  assert.equal(
    num(await rawBucket(env.client, repo, "u1", "api"), "b_rpm_cp"),
    5000,
  );

  await repo.deleteLimits("u1", { resource: "api" });
  r = await repo.resolveLimits("u1", "api");
  assert.equal(r?.source, "entity_default");
  await repo.deleteLimits("u1");
  assert.equal((await repo.resolveLimits("u1", "api"))?.source, "resource");
});

Deno.test("configCacheTtlSeconds 0 disables the config cache", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock, configCacheTtlSeconds: 0 });
  const writer = await Repository.open({
    client: env.client,
    stack: env.repo.tableName,
    clock,
  });
  await writer.setResourceDefaults("api", [Limit.perMinute("rpm", 10)]);
  assert.equal(
    (await env.repo.resolveLimits("u1", "api"))?.limits[0]?.capacity,
    10,
  );
  await writer.setResourceDefaults("api", [Limit.perMinute("rpm", 20)]);
  assert.equal(
    (await env.repo.resolveLimits("u1", "api"))?.limits[0]?.capacity,
    20,
  );
  const stats = env.repo.getCacheStats();
  assert.equal(stats.size, 0);
  assert.equal(stats.hits, 0);
  assert.equal(stats.ttlSeconds, 0);
  assert.equal(stats.misses, 8, "four levels missed per resolution");
});

Deno.test("getCacheStats() counts a hit or a miss per level inspected", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock, configCacheTtlSeconds: 60 });
  const writer = await Repository.open({
    client: env.client,
    stack: env.repo.tableName,
    clock,
  });
  await writer.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  const repo = env.repo;
  assert.deepEqual(repo.getCacheStats(), {
    hits: 0,
    misses: 0,
    size: 0,
    ttlSeconds: 60,
  });
  env.calls.reset();
  await repo.resolveLimits("u1", "api");
  assert.deepEqual(repo.getCacheStats(), {
    hits: 0,
    misses: 4,
    size: 4,
    ttlSeconds: 60,
  });
  assert.equal(env.calls.counts.get("BatchGetItemCommand"), 1);
  await repo.resolveLimits("u1", "api");
  assert.deepEqual(repo.getCacheStats(), {
    hits: 4,
    misses: 4,
    size: 4,
    ttlSeconds: 60,
  });
  assert.equal(env.calls.total(), 1, "an all-cached resolution reads nothing");
  await repo.resolveLimits("u2", "api");
  assert.deepEqual(repo.getCacheStats(), {
    hits: 6,
    misses: 6,
    size: 6,
    ttlSeconds: 60,
  });
  repo.invalidateConfigCache();
  assert.equal(repo.getCacheStats().size, 0);
});

// ------------------------------------------------------------ bucket TTL and format

Deno.test("acquire() creates bucket items in the 0.10 format with a default-level TTL", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  const limiter = new RateLimiter(repo);
  await repo.setSystemDefaults([Limit.perMinute("rpm", 100)]);
  await repo.setResourceDefaults("slow", [Limit.custom("rpd", 1000, 10, 60)]);
  await limiter.acquire(
    { entityId: "u1", resource: "api", consume: { rpm: 1 } },
    () => {},
  );
  const item = await rawBucket(env.client, repo, "u1", "api");
  const ns = repo.namespaceId;
  assert.equal(text(item, "PK"), `${ns}/BUCKET#u1#api#0`);
  assert.equal(text(item, "SK"), "#STATE");
  assert.equal(text(item, "entity_id"), "u1");
  assert.equal(text(item, "resource"), "api");
  // Created full: rf a holdback ahead (1% of rpm 100: 600 ms), so a create
  // that lands late is credited no refill.
  assert.equal(num(item, "rf"), START + 600);
  assert.equal(num(item, "shard_count"), 1);
  assert.equal(item?.["cascade"]?.BOOL, false);
  assert.equal(hasAttr(item, "parent_id"), false);
  assert.equal(num(item, "b_rpm_tk"), 99_000);
  assert.equal(num(item, "b_rpm_cp"), 100_000);
  assert.equal(num(item, "b_rpm_ra"), 100_000);
  assert.equal(num(item, "b_rpm_rp"), 60_000);
  assert.equal(num(item, "b_rpm_tc"), 1000);
  assert.equal(num(item, "b_wcu_cp"), 1_000_000);
  assert.equal(num(item, "b_wcu_ra"), 1_000_000);
  assert.equal(num(item, "b_wcu_rp"), 1000);
  assert.equal(text(item, "GSI2PK"), `${ns}/RESOURCE#api`);
  assert.equal(text(item, "GSI2SK"), "BUCKET#u1#0");
  assert.equal(text(item, "GSI3PK"), `${ns}/ENTITY#u1`);
  assert.equal(text(item, "GSI3SK"), "BUCKET#api#0");
  assert.equal(text(item, "GSI4PK"), ns);
  assert.equal(text(item, "GSI4SK"), "BUCKET#u1#api#0");
  // per_minute(100): 60 s to fill × 7.
  assert.equal(num(item, "ttl"), START_S + 420);

  await limiter.acquire(
    { entityId: "u1", resource: "slow", consume: { rpd: 1 } },
    () => {},
  );
  // capacity 1000 at 10 per 60 s: 6000 s to fill × 7.
  assert.equal(
    num(await rawBucket(env.client, repo, "u1", "slow"), "ttl"),
    START_S + 42_000,
  );

  // Default-level buckets keep being refreshed by later acquires.
  clock.advance(100_000);
  await limiter.acquire(
    { entityId: "u1", resource: "api", consume: { rpm: 1 } },
    () => {},
  );
  assert.equal(
    num(await rawBucket(env.client, repo, "u1", "api"), "ttl"),
    START_S + 100 + 420,
  );
});

Deno.test("acquire() gives entity-config buckets no TTL and setLimits() removes an existing one", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  const limiter = new RateLimiter(repo);
  await repo.setSystemDefaults([Limit.perMinute("rpm", 100)]);
  await repo.setLimits("custom", [Limit.perMinute("rpm", 100)], {
    resource: "api",
  });
  await repo.setLimits("withdefault", [Limit.perMinute("rpm", 100)]);
  for (const id of ["custom", "withdefault", "plain"]) {
    await limiter.acquire(
      { entityId: id, resource: "api", consume: { rpm: 1 } },
      () => {},
    );
  }
  assert.equal(
    hasAttr(await rawBucket(env.client, repo, "custom", "api"), "ttl"),
    false,
  );
  assert.equal(
    num(await rawBucket(env.client, repo, "withdefault", "api"), "ttl"),
    START_S + 420,
    "an entity _default_ config is a default level",
  );
  assert.equal(
    num(await rawBucket(env.client, repo, "plain", "api"), "ttl"),
    START_S + 420,
  );

  await repo.setLimits("plain", [Limit.perMinute("rpm", 50)], {
    resource: "api",
  });
  const synced = await rawBucket(env.client, repo, "plain", "api");
  assert.equal(hasAttr(synced, "ttl"), false);
  assert.equal(num(synced, "b_rpm_cp"), 50_000);
  assert.equal(num(synced, "b_rpm_ra"), 50_000);
  assert.equal(num(synced, "b_rpm_rp"), 60_000);
  assert.equal(
    num(synced, "b_rpm_tk"),
    50_000,
    "a lowered capacity clamps the stored balance at once",
  );

  await limiter.acquire(
    { entityId: "plain", resource: "api", consume: { rpm: 1 } },
    () => {},
  );
  const after = await rawBucket(env.client, repo, "plain", "api");
  assert.equal(hasAttr(after, "ttl"), false);
  assert.equal(num(after, "b_rpm_cp"), 50_000);
});

async function checkLoweredBySetLimits(speculativeWrites: boolean) {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  const limiter = new RateLimiter(repo, { speculativeWrites });
  await repo.setSystemDefaults([Limit.perMinute("rpm", 100)]);
  await limiter.acquire(
    { entityId: "u1", resource: "api", consume: { rpm: 1 } },
    () => {},
  );
  await repo.setLimits("u1", [Limit.perMinute("rpm", 50)], {
    resource: "api",
  });
  await limiter.acquire(
    { entityId: "u1", resource: "api", consume: { rpm: 1 } },
    () => {},
  );
  const item = await rawBucket(env.client, repo, "u1", "api");
  assert.equal(num(item, "b_rpm_cp"), 50_000);
  assert.equal(
    num(item, "b_rpm_tk"),
    49_000,
    "the balance is clamped to the lowered capacity before charging",
  );
  assert.deepEqual(
    await limiter.available({ entityId: "u1", resource: "api" }),
    { rpm: 49 },
  );
}

Deno.test("acquire() clamps a balance above a capacity lowered by setLimits() (slow path)", async () => {
  await checkLoweredBySetLimits(false);
});

Deno.test("acquire() clamps a balance above a capacity lowered by setLimits() (fast path)", async () => {
  await checkLoweredBySetLimits(true);
});

Deno.test("acquire() returns to the stored entity config after a call with a limits override", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  const limiter = new RateLimiter(repo);
  await repo.setLimits("e1", [Limit.perMinute("rpm", 5)], { resource: "api" });
  await limiter.acquire({
    entityId: "e1",
    resource: "api",
    consume: { rpm: 1 },
    limits: [Limit.perMinute("rpm", 7)],
  }, () => {});
  let item = await rawBucket(env.client, repo, "e1", "api");
  assert.equal(num(item, "b_rpm_cp"), 7000);
  assert.equal(num(item, "b_rpm_tk"), 6000);
  assert.equal(num(item, "ttl"), START_S + 420);

  await limiter.acquire(
    { entityId: "e1", resource: "api", consume: { rpm: 1 } },
    () => {},
  );
  item = await rawBucket(env.client, repo, "e1", "api");
  assert.equal(num(item, "b_rpm_cp"), 5000, "the stored config applies again");
  assert.equal(num(item, "b_rpm_tk"), 4000, "clamped to 5, then charged 1");
  assert.equal(
    hasAttr(item, "ttl"),
    false,
    "entity-config buckets keep no TTL",
  );
});

Deno.test("acquire() applies a limits override to a bucket that already exists", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  const limiter = new RateLimiter(repo);
  await repo.setLimits("e1", [Limit.perMinute("rpm", 5)], { resource: "api" });
  await limiter.acquire(
    { entityId: "e1", resource: "api", consume: { rpm: 1 } },
    () => {},
  );
  const before = await rawBucket(env.client, repo, "e1", "api");
  assert.equal(num(before, "b_rpm_tk"), 4000);

  // The override allows 1 per minute: asking 2 can never be admitted although 4
  // are stored, so it is refused without a Retry-After (and without a write).
  const err = await rejection(limiter.acquire({
    entityId: "e1",
    resource: "api",
    consume: { rpm: 2 },
    limits: [Limit.perMinute("rpm", 1)],
  }, () => assert.fail("body must not run")));
  assert.ok(err instanceof RequestExceedsCapacity, String(err));
  assert.equal(err.retryable, false);
  assert.equal(err.statuses[0]?.limit.capacity, 1);
  assert.equal(err.statuses[0]?.available, 1);
  assert.deepEqual(
    await rawBucket(env.client, repo, "e1", "api"),
    before,
    "nothing written",
  );
});

Deno.test("acquire() writes no TTL when bucketTtlMultiplier is 0", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock, bucketTtlMultiplier: 0 });
  const limiter = new RateLimiter(env.repo);
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 100)]);
  await limiter.acquire(
    { entityId: "u1", resource: "api", consume: { rpm: 1 } },
    () => {},
  );
  await limiter.acquire(
    { entityId: "u1", resource: "api", consume: { rpm: 1 } },
    () => {},
  );
  const item = await rawBucket(env.client, env.repo, "u1", "api");
  assert.equal(hasAttr(item, "ttl"), false);
  assert.equal(num(item, "b_rpm_tk"), 98_000);
});

// ------------------------------------------------------------ config changes

Deno.test("acquire() applies a changed resource default to an existing bucket", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  const limiter = new RateLimiter(repo);
  await repo.setResourceDefaults("api", [Limit.perMinute("rpm", 10)]);
  await limiter.acquire(
    { entityId: "u1", resource: "api", consume: { rpm: 1 } },
    () => {},
  );
  let item = await rawBucket(env.client, repo, "u1", "api");
  assert.equal(num(item, "b_rpm_cp"), 10_000);
  assert.equal(num(item, "b_rpm_tk"), 9000);

  await repo.setResourceDefaults("api", [Limit.perMinute("rpm", 20)]);
  repo.invalidateConfigCache();
  await limiter.acquire(
    { entityId: "u1", resource: "api", consume: { rpm: 1 } },
    () => {},
  );
  item = await rawBucket(env.client, repo, "u1", "api");
  assert.equal(num(item, "b_rpm_cp"), 20_000);
  assert.equal(num(item, "b_rpm_ra"), 20_000);
  assert.equal(num(item, "b_rpm_rp"), 60_000);
  assert.equal(num(item, "b_rpm_tk"), 8000);
  assert.equal(num(item, "b_rpm_tc"), 2000);
  const avail = await limiter.available({ entityId: "u1", resource: "api" });
  assert.deepEqual(avail, { rpm: 8 });

  // Lowering the capacity below the balance clamps it.
  await repo.setResourceDefaults("api", [Limit.perMinute("rpm", 5)]);
  repo.invalidateConfigCache();
  await limiter.acquire(
    { entityId: "u1", resource: "api", consume: { rpm: 1 } },
    () => {},
  );
  item = await rawBucket(env.client, repo, "u1", "api");
  assert.equal(num(item, "b_rpm_cp"), 5000);
  assert.equal(num(item, "b_rpm_tk"), 4000);
  for (let i = 0; i < 4; i++) {
    await limiter.acquire(
      { entityId: "u1", resource: "api", consume: { rpm: 1 } },
      () => {},
    );
  }
  await assert.rejects(
    limiter.acquire(
      { entityId: "u1", resource: "api", consume: { rpm: 1 } },
      () => {},
    ),
    RateLimitExceeded,
  );
  assert.equal(
    num(await rawBucket(env.client, repo, "u1", "api"), "b_rpm_tk"),
    0,
  );
});

Deno.test("acquire() charges a limit added to the config after the bucket exists", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  const limiter = new RateLimiter(repo);
  await repo.setResourceDefaults("llm", [Limit.perMinute("rpm", 10)]);
  await limiter.acquire(
    { entityId: "u1", resource: "llm", consume: { rpm: 1 } },
    () => {},
  );
  assert.equal(
    hasAttr(await rawBucket(env.client, repo, "u1", "llm"), "b_tpm_tk"),
    false,
  );

  await repo.setResourceDefaults("llm", [
    Limit.perMinute("rpm", 10),
    Limit.perMinute("tpm", 1000),
  ]);
  repo.invalidateConfigCache();
  await limiter.acquire(
    { entityId: "u1", resource: "llm", consume: { rpm: 1, tpm: 100 } },
    () => {},
  );
  let item = await rawBucket(env.client, repo, "u1", "llm");
  assert.equal(num(item, "b_rpm_tk"), 8000);
  assert.equal(num(item, "b_tpm_tk"), 900_000);
  assert.equal(num(item, "b_tpm_cp"), 1_000_000);
  assert.equal(num(item, "b_tpm_ra"), 1_000_000);
  assert.equal(num(item, "b_tpm_rp"), 60_000);
  assert.equal(num(item, "b_tpm_tc"), 100_000);

  const err = await rejection(limiter.acquire(
    { entityId: "u1", resource: "llm", consume: { rpm: 1, tpm: 950 } },
    () => {},
  ));
  assert.ok(err instanceof RateLimitExceeded, String(err));
  assert.deepEqual(err.violations.map((v) => v.limitName), ["tpm"]);
  assert.equal(err.violations[0]?.available, 900);
  await limiter.acquire(
    { entityId: "u1", resource: "llm", consume: { rpm: 1, tpm: 900 } },
    () => {},
  );
  item = await rawBucket(env.client, repo, "u1", "llm");
  assert.equal(num(item, "b_rpm_tk"), 7000);
  assert.equal(num(item, "b_tpm_tk"), 0);
});

// ------------------------------------------------------------ names

Deno.test("acquire() handles limit names with '-' and '.' on the fast and slow paths", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  const fast = new RateLimiter(repo);
  const slow = new RateLimiter(repo, { speculativeWrites: false });
  await repo.setSystemDefaults([
    Limit.perMinute("rate-limit", 5),
    Limit.perMinute("gpt-3.5", 100),
  ]);
  const consume = { "rate-limit": 1, "gpt-3.5": 10 };
  await fast.acquire({ entityId: "u1", resource: "api", consume }, () => {});
  let item = await rawBucket(env.client, repo, "u1", "api");
  assert.equal(num(item, "b_rate-limit_tk"), 4000);
  assert.equal(num(item, "b_gpt-3.5_tk"), 90_000);
  assert.equal(num(item, "b_rate-limit_cp"), 5000);
  assert.equal(num(item, "b_gpt-3.5_tc"), 10_000);

  env.calls.reset();
  await fast.acquire({ entityId: "u1", resource: "api", consume }, (lease) => {
    lease.adjust({ "gpt-3.5": 5 });
  });
  assert.equal(
    env.calls.counts.get("BatchGetItemCommand") ?? 0,
    0,
    "the second acquire takes the fast path",
  );
  item = await rawBucket(env.client, repo, "u1", "api");
  assert.equal(num(item, "b_rate-limit_tk"), 3000);
  assert.equal(num(item, "b_gpt-3.5_tk"), 75_000);

  await slow.acquire({ entityId: "u1", resource: "api", consume }, () => {});
  item = await rawBucket(env.client, repo, "u1", "api");
  assert.equal(num(item, "b_rate-limit_tk"), 2000);
  assert.equal(num(item, "b_gpt-3.5_tk"), 65_000);
  assert.deepEqual(await fast.available({ entityId: "u1", resource: "api" }), {
    "rate-limit": 2,
    "gpt-3.5": 65,
  });

  for (const limiter of [fast, slow]) {
    const err = await rejection(limiter.acquire({
      entityId: "u1",
      resource: "api",
      consume: { "rate-limit": 3 },
    }, () => {}));
    assert.ok(err instanceof RateLimitExceeded, String(err));
    assert.deepEqual(err.violations.map((v) => v.limitName), ["rate-limit"]);
    assert.match(err.message, /\[rate-limit\]/);
  }

  await repo.setLimits("u2", [Limit.perMinute("gpt-3.5", 2)], {
    resource: "api",
  });
  const cfg = await repo.getLimits("u2", { resource: "api" });
  assert.deepEqual(cfg.map((l) => l.name), ["gpt-3.5"]);
  await fast.acquire(
    { entityId: "u2", resource: "api", consume: { "gpt-3.5": 1 } },
    () => {},
  );
  await fast.acquire(
    { entityId: "u2", resource: "api", consume: { "gpt-3.5": 1 } },
    () => {},
  );
  item = await rawBucket(env.client, repo, "u2", "api");
  assert.equal(num(item, "b_gpt-3.5_tk"), 0);
  assert.equal(hasAttr(item, "b_rate-limit_tk"), false);
});

Deno.test("acquire() works with resource names containing '/' and the bucket key round-trips", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  const limiter = new RateLimiter(repo);
  await repo.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  await repo.setResourceDefaults("openai/gpt-4", [Limit.perMinute("rpm", 3)]);
  for (
    const resource of ["openai/gpt-4", "anthropic/claude-3/opus", "openai/"]
  ) {
    await limiter.acquire(
      { entityId: "u1", resource, consume: { rpm: 1 } },
      () => {},
    );
    await limiter.acquire(
      { entityId: "u1", resource, consume: { rpm: 1 } },
      () => {},
    );
    const item = await rawBucket(env.client, repo, "u1", resource);
    const pk = text(item, "PK");
    assert.equal(pk, `${repo.namespaceId}/BUCKET#u1#${resource}#0`);
    assert.deepEqual(parseBucketPk(pk), {
      namespaceId: repo.namespaceId,
      entityId: "u1",
      resource,
      shard: 0,
    });
    assert.equal(text(item, "resource"), resource);
    assert.equal(
      text(item, "GSI2PK"),
      `${repo.namespaceId}/RESOURCE#${resource}`,
    );
    assert.equal(text(item, "GSI3SK"), `BUCKET#${resource}#0`);
  }
  const gpt4 = await rawBucket(env.client, repo, "u1", "openai/gpt-4");
  assert.equal(num(gpt4, "b_rpm_cp"), 3000, "the resource default applies");
  assert.equal(num(gpt4, "b_rpm_tk"), 1000);
  await limiter.acquire(
    { entityId: "u1", resource: "openai/gpt-4", consume: { rpm: 1 } },
    () => {},
  );
  await assert.rejects(
    limiter.acquire(
      { entityId: "u1", resource: "openai/gpt-4", consume: { rpm: 1 } },
      () => {},
    ),
    RateLimitExceeded,
  );
  const buckets = await repo.getEntityBuckets("u1");
  assert.deepEqual(buckets.map((b) => b.resource).sort(), [
    "anthropic/claude-3/opus",
    "openai/",
    "openai/gpt-4",
  ]);
});

// ------------------------------------------------------------ outages

Deno.test("acquire() with onUnavailable 'allow' runs the body unchecked when DynamoDB fails", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  const net = breakable(env.client);
  const repo = await Repository.open({
    client: net.client,
    stack: env.repo.tableName,
    clock,
  });
  const errors: string[] = [];
  const limiter = new RateLimiter(repo, {
    onError: (_e, context) => errors.push(context),
  });
  net.cut();
  const result = await limiter.acquire({
    entityId: "u1",
    resource: "api",
    consume: { rpm: 1 },
    onUnavailable: "allow",
  }, async (lease) => {
    assert.equal(lease.unchecked, true);
    assert.equal(lease.entries.length, 0);
    await lease.consume({ rpm: 5 });
    lease.adjust({ rpm: 3 });
    lease.release({ rpm: 1 });
    return "ran";
  });
  assert.equal(result, "ran");
  assert.ok(net.failures > 0);
  assert.ok(errors.includes("acquire"), "the outage is reported to onError");
  assert.equal(await rawBucket(env.client, env.repo, "u1", "api"), undefined);
});

Deno.test("acquire() with onUnavailable 'block' raises RateLimiterUnavailable when DynamoDB fails", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  const net = breakable(env.client);
  const repo = await Repository.open({
    client: net.client,
    stack: env.repo.tableName,
    clock,
  });
  const limiter = new RateLimiter(repo);
  net.cut();
  for (const onUnavailable of ["block", undefined] as const) {
    let bodyRan = false;
    const err = await rejection(limiter.acquire({
      entityId: "u1",
      resource: "api",
      consume: { rpm: 1 },
      ...(onUnavailable ? { onUnavailable } : {}),
    }, () => {
      bodyRan = true;
    }));
    assert.ok(err instanceof RateLimiterUnavailable, String(err));
    assert.equal(err.code, "RATE_LIMITER_UNAVAILABLE");
    assert.equal(err.name, "RateLimiterUnavailable");
    assert.equal(err.entityId, "u1");
    assert.equal(err.resource, "api");
    assert.equal(err.stackName, env.repo.tableName);
    assert.match(String((err.cause as Error).message), /ECONNREFUSED/);
    assert.equal(bodyRan, false);
  }
  // Validation errors are never turned into outages.
  await assert.rejects(
    limiter.acquire({
      entityId: "#bad",
      resource: "api",
      consume: { rpm: 1 },
      onUnavailable: "allow",
    }),
    { name: "InvalidIdentifierError" },
  );
  net.restore();
  await limiter.acquire({
    entityId: "u1",
    resource: "api",
    consume: { rpm: 1 },
  }, () => {});
  assert.equal(
    num(await rawBucket(env.client, env.repo, "u1", "api"), "b_rpm_tk"),
    9000,
  );
});

Deno.test("acquire() honours on_unavailable 'allow' stored in the system defaults", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock, configCacheTtlSeconds: 60 });
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 10)], {
    onUnavailable: "allow",
  });
  const stored = await env.repo.getSystemDefaults();
  assert.equal(stored.onUnavailable, "allow");
  const net = breakable(env.client);
  const repo = await Repository.open({
    client: net.client,
    stack: env.repo.tableName,
    clock,
    configCacheTtlSeconds: 60,
  });
  const limiter = new RateLimiter(repo);
  await limiter.acquire({
    entityId: "u1",
    resource: "api",
    consume: { rpm: 1 },
  }, () => {});

  net.cut();
  const unchecked = await limiter.acquire(
    { entityId: "u1", resource: "api", consume: { rpm: 1 } },
    (lease) => lease.unchecked,
  );
  assert.equal(unchecked, true);

  // The per-call argument wins over the stored value.
  await assert.rejects(
    limiter.acquire({
      entityId: "u1",
      resource: "api",
      consume: { rpm: 1 },
      onUnavailable: "block",
    }),
    { code: "RATE_LIMITER_UNAVAILABLE" },
  );

  // Past the cache TTL the remembered value still applies.
  clock.advance(61_000);
  assert.equal(
    await limiter.acquire(
      { entityId: "u1", resource: "api", consume: { rpm: 1 } },
      (lease) => lease.unchecked,
    ),
    true,
  );
  // Forgetting everything falls back to block.
  repo.invalidateConfigCache();
  await assert.rejects(
    limiter.acquire({ entityId: "u1", resource: "api", consume: { rpm: 1 } }),
    RateLimiterUnavailable,
  );
  net.restore();
  assert.equal(
    num(await rawBucket(env.client, env.repo, "u1", "api"), "b_rpm_tk"),
    9000,
    "unchecked acquires record nothing",
  );
});

// ------------------------------------------------------------ capacity queries

Deno.test("available() and timeUntilAvailable() take the minimum with a cascading parent", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const repo = env.repo;
  const limiter = new RateLimiter(repo);
  await repo.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  await repo.createEntity("org");
  await repo.createEntity("key1", { parentId: "org", cascade: true });
  await repo.createEntity("key2", { parentId: "org" });
  await repo.setLimits("org", [Limit.perMinute("rpm", 5)], { resource: "api" });

  assert.deepEqual(
    await limiter.available({ entityId: "key1", resource: "api" }),
    { rpm: 5 },
    "missing buckets count as full",
  );
  await limiter.acquire(
    { entityId: "key1", resource: "api", consume: { rpm: 3 } },
    () => {},
  );
  assert.equal(
    num(await rawBucket(env.client, repo, "key1", "api"), "b_rpm_tk"),
    7000,
  );
  assert.equal(
    num(await rawBucket(env.client, repo, "org", "api"), "b_rpm_tk"),
    2000,
  );
  assert.deepEqual(
    await limiter.available({ entityId: "key1", resource: "api" }),
    { rpm: 2 },
  );
  assert.deepEqual(
    await limiter.available({ entityId: "key2", resource: "api" }),
    { rpm: 10 },
    "no cascade: the parent is not consulted",
  );
  // Parent: 2000 short at 5000 per 60 000 ms → 24 000 ms (+1), from the
  // end of the new bucket's 600 ms holdback.
  assert.equal(
    await limiter.timeUntilAvailable({
      entityId: "key1",
      resource: "api",
      needed: { rpm: 4 },
    }),
    24.601,
  );
  assert.equal(
    await limiter.timeUntilAvailable({
      entityId: "key1",
      resource: "api",
      needed: { rpm: 2 },
    }),
    0,
  );

  // 12 s after the new buckets' 600 ms holdback.
  clock.advance(12_600);
  assert.deepEqual(
    await limiter.available({ entityId: "key1", resource: "api" }),
    { rpm: 3 },
  );
  assert.equal(
    await limiter.timeUntilAvailable({
      entityId: "key1",
      resource: "api",
      needed: { rpm: 4 },
    }),
    12.001,
  );
  // The parent on its own: 2 + 1 refilled in 12 s at 5 per minute.
  assert.deepEqual(
    await limiter.available({ entityId: "org", resource: "api" }),
    { rpm: 3 },
  );
  await limiter.acquire(
    { entityId: "key1", resource: "api", consume: { rpm: 3 } },
    () => {},
  );
  assert.deepEqual(
    await limiter.available({ entityId: "key1", resource: "api" }),
    { rpm: 0 },
  );
  // key1 holds 7 - 3 + 2 refilled = 6: the plain write took 3 from the stored 7
  // and left the 2 refilled since rf to be claimed later (rf did not move).
  const raw = await rawBucket(env.client, repo, "key1", "api");
  assert.equal(num(raw, "b_rpm_tk"), 4000);
  assert.equal(num(raw, "rf"), START + 600);
  assert.deepEqual(
    await limiter.available({ entityId: "key2", resource: "api" }),
    { rpm: 10 },
  );
});

// ------------------------------------------------------------ validation

Deno.test("acquire() validates its input before writing anything", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const limiter = new RateLimiter(env.repo);
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  // Warm the caches so a later slip would be a fast-path write.
  await limiter.acquire(
    { entityId: "u1", resource: "api", consume: { rpm: 1 } },
    () => {},
  );
  const before = await rawBucket(env.client, env.repo, "u1", "api");

  const cases: {
    entityId: string;
    resource: string;
    consume: Record<string, number>;
    expected: { name: string; code: string; field: string };
    reads: boolean;
  }[] = [
    {
      entityId: "#bad",
      resource: "api",
      consume: { rpm: 1 },
      expected: {
        name: "InvalidIdentifierError",
        code: "INVALID_IDENTIFIER",
        field: "entity_id",
      },
      reads: false,
    },
    {
      entityId: "-lead",
      resource: "api",
      consume: { rpm: 1 },
      expected: {
        name: "InvalidIdentifierError",
        code: "INVALID_IDENTIFIER",
        field: "entity_id",
      },
      reads: false,
    },
    {
      entityId: "u1",
      resource: "/gpt-4",
      consume: { rpm: 1 },
      expected: {
        name: "InvalidNameError",
        code: "INVALID_NAME",
        field: "resource",
      },
      reads: false,
    },
    {
      entityId: "u1",
      resource: "openai#gpt-4",
      consume: { rpm: 1 },
      expected: {
        name: "InvalidNameError",
        code: "INVALID_NAME",
        field: "resource",
      },
      reads: false,
    },
    {
      entityId: "u1",
      resource: "api",
      consume: { rpm: -1 },
      expected: {
        name: "ValidationError",
        code: "VALIDATION_FAILED",
        field: "consume.rpm",
      },
      reads: false,
    },
    {
      entityId: "u1",
      resource: "api",
      consume: { rpm: 1.5 },
      expected: {
        name: "ValidationError",
        code: "VALIDATION_FAILED",
        field: "consume.rpm",
      },
      reads: false,
    },
    {
      entityId: "u1",
      resource: "api",
      consume: { wcu: 1 },
      expected: {
        name: "InvalidNameError",
        code: "INVALID_NAME",
        field: "consume",
      },
      reads: false,
    },
    {
      entityId: "u1",
      resource: "api",
      consume: { rpm: 1, nope: 1 },
      expected: {
        name: "ValidationError",
        code: "VALIDATION_FAILED",
        field: "consume",
      },
      reads: true,
    },
  ];
  for (const c of cases) {
    for (const speculativeWrites of [true, false]) {
      const l = speculativeWrites
        ? limiter
        : new RateLimiter(env.repo, { speculativeWrites });
      env.calls.reset();
      let bodyRan = false;
      const err = await rejection(l.acquire({
        entityId: c.entityId,
        resource: c.resource,
        consume: c.consume,
        onUnavailable: "allow",
      }, () => {
        bodyRan = true;
      }));
      const label = `${JSON.stringify(c.consume)} ${c.entityId}/${c.resource}`;
      assert.ok(err instanceof ValidationError, `${label}: ${err}`);
      assert.equal(err.name, c.expected.name, label);
      assert.equal(err.code, c.expected.code, label);
      assert.equal(err.field, c.expected.field, label);
      assert.equal(bodyRan, false);
      assert.equal(writeCount(env.calls), 0, `${label}: no write command`);
      if (!c.reads) assert.equal(env.calls.total(), 0, `${label}: no I/O`);
    }
  }
  assert.ok(
    new InvalidIdentifierError("x", "y", "z") instanceof ValidationError,
  );
  assert.ok(new InvalidNameError("x", "y", "z") instanceof ValidationError);
  assert.deepEqual(
    await rawBucket(env.client, env.repo, "u1", "api"),
    before,
  );
});
