import assert from "node:assert/strict";
import { GetItemCommand } from "@aws-sdk/client-dynamodb";
import {
  Limit,
  RateLimiter,
  RateLimitExceeded,
  Repository,
} from "../../mod.ts";
import { freshRepo, manualClock } from "./_harness.ts";

const WRITES = [
  "PutItemCommand",
  "UpdateItemCommand",
  "TransactWriteItemsCommand",
  "DeleteItemCommand",
];

Deno.test("acquire() makes exactly one DynamoDB call on the warm fast path", async () => {
  const clock = manualClock();
  await using env = await freshRepo({ clock });
  await env.repo.setSystemDefaults([
    Limit.perMinute("rpm", 1000),
    Limit.perMinute("tpm", 100_000),
  ]);
  const limiter = new RateLimiter(env.repo);
  const consume = {
    entityId: "key-1",
    resource: "openai/gpt-4",
    consume: { rpm: 1, tpm: 100 },
  };
  await limiter.acquire(consume, () => {}); // cold: config + slow path create
  for (let i = 0; i < 5; i++) {
    env.calls.reset();
    await limiter.acquire(consume, () => {});
    assert.deepEqual(Object.fromEntries(env.calls.counts), {
      UpdateItemCommand: 1,
    });
  }
  // A lease that adjusts costs exactly one more write, at commit.
  env.calls.reset();
  await limiter.acquire(consume, (lease) => lease.adjust({ tpm: 400 }));
  assert.deepEqual(Object.fromEntries(env.calls.counts), {
    UpdateItemCommand: 2,
  });
});

Deno.test("acquire() answers a fast rejection with one call and writes nothing", async () => {
  const clock = manualClock();
  await using env = await freshRepo({ clock });
  await env.repo.setSystemDefaults([Limit.perHour("rph", 3)]);
  const limiter = new RateLimiter(env.repo);
  const req = { entityId: "key-1", resource: "api", consume: { rph: 1 } };
  for (let i = 0; i < 3; i++) await limiter.acquire(req, () => {});
  const key = {
    PK: { S: env.repo.bucketPk("key-1", "api") },
    SK: { S: "#STATE" },
  };
  const before = await env.client.send(
    new GetItemCommand({
      TableName: env.repo.tableName,
      Key: key,
      ConsistentRead: true,
    }),
  );
  env.calls.reset();
  await assert.rejects(limiter.acquire(req, () => {}), (e: unknown) => {
    assert.ok(e instanceof RateLimitExceeded);
    // 1 token per 1200 s: the wait is the whole period (+1 ms rounding),
    // counted from the end of the new bucket's holdback (1 s at most).
    assert.equal(e.retryAfterSeconds, 1201.001);
    assert.equal(e.retryAfterHeader, "1202");
    return true;
  });
  assert.deepEqual(Object.fromEntries(env.calls.counts), {
    UpdateItemCommand: 1,
  });
  const after = await env.client.send(
    new GetItemCommand({
      TableName: env.repo.tableName,
      Key: key,
      ConsistentRead: true,
    }),
  );
  assert.deepEqual(
    after.Item,
    before.Item,
    "a refused speculative write must not change the item",
  );
});

Deno.test("acquire() with a warm cascade charges child and parent in one round trip", async () => {
  const clock = manualClock();
  await using env = await freshRepo({ clock });
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 1000)]);
  await env.repo.createEntity("project-1");
  await env.repo.createEntity("key-1", {
    parentId: "project-1",
    cascade: true,
  });
  const limiter = new RateLimiter(env.repo);
  const req = { entityId: "key-1", resource: "api", consume: { rpm: 1 } };
  await limiter.acquire(req, () => {});
  await limiter.acquire(req, () => {});
  env.calls.reset();
  let inFlight = 0;
  let maxInFlight = 0;
  env.client.middlewareStack.add((next) => async (args) => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    try {
      return await next(args);
    } finally {
      inFlight--;
    }
  }, { step: "initialize", name: "inflight" });
  await limiter.acquire(req, () => {});
  assert.deepEqual(Object.fromEntries(env.calls.counts), {
    UpdateItemCommand: 2,
  });
  assert.equal(maxInFlight, 2, "child and parent writes are sent concurrently");
  const avail = await limiter.available({ entityId: "key-1", resource: "api" });
  assert.equal(avail["rpm"], 1000 - 3);
});

Deno.test("acquire() sends no write when validation fails", async () => {
  await using env = await freshRepo({ clock: manualClock() });
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  const limiter = new RateLimiter(env.repo);
  env.calls.reset();
  const bad = [
    { entityId: "#bad", resource: "api", consume: { rpm: 1 } },
    { entityId: "ok", resource: "/api", consume: { rpm: 1 } },
    { entityId: "ok", resource: "api", consume: { rpm: -1 } },
    { entityId: "ok", resource: "api", consume: { rpm: 1.5 } },
    { entityId: "ok", resource: "api", consume: { rmp: 1 } },
  ];
  for (const b of bad) {
    await assert.rejects(limiter.acquire(b, () => {}), {
      name: /ValidationError|InvalidIdentifierError|InvalidNameError/,
    });
  }
  for (const w of WRITES) {
    assert.equal(
      env.calls.counts.get(w) ?? 0,
      0,
      `${w} sent for invalid input`,
    );
  }
});

Deno.test("acquire() issues only commands the acquire IAM policies grant (every path)", async () => {
  const { ACQUIRE_ACTIONS } = await import("../../infra/iam_actions.ts");
  const clock = manualClock();
  await using env = await freshRepo({ clock });
  await env.repo.setSystemDefaults([
    Limit.perMinute("rpm", 5),
    Limit.perMinute("tpm", 1000),
  ]);
  await env.repo.createEntity("proj");
  await env.repo.createEntity("key", { parentId: "proj", cascade: true });
  env.calls.reset();
  const fast = new RateLimiter(env.repo);
  const slow = new RateLimiter(env.repo, {
    speculativeWrites: false,
    refusalCacheSize: 0,
  });
  const req = {
    entityId: "key",
    resource: "api",
    consume: { rpm: 1, tpm: 100 },
  };
  // Cold and warm fast path, lease adjust, consume, rollback, slow path, refusals.
  await fast.acquire(req, (lease) => lease.adjust({ tpm: 50 }));
  await fast.acquire(req, async (lease) => {
    await lease.consume({ tpm: 10 });
  });
  await assert.rejects(fast.acquire(req, () => {
    throw new Error("body failed");
  }));
  await slow.acquire(req, () => {});
  for (let i = 0; i < 6; i++) await fast.acquire(req, () => {}).catch(() => {});
  await slow.acquire(req, () => {}).catch(() => {});
  clock.advance(30_000);
  await fast.acquire(req, () => {});
  await fast.available({ entityId: "key", resource: "api" });
  const used = [...env.calls.counts.keys()].map((c) =>
    `dynamodb:${c.replace(/Command$/, "")}`
  );
  assert.ok(
    used.includes("dynamodb:UpdateItem") &&
      used.includes("dynamodb:BatchGetItem"),
  );
  for (const action of used) {
    assert.ok(
      (ACQUIRE_ACTIONS as readonly string[]).includes(action),
      `${action} is not granted to acquire`,
    );
  }
});

Deno.test("acquire() on a bucket that sat idle until full is still one call (a refill under the rf lock)", async () => {
  const clock = manualClock();
  await using env = await freshRepo({ clock });
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 60)]);
  const limiter = new RateLimiter(env.repo);
  const req = { entityId: "key-1", resource: "api", consume: { rpm: 1 } };
  await limiter.acquire(req, () => {});
  // Within the config TTL (60 s) nothing is re-read; the bucket refilled to full.
  clock.advance(59_000);
  env.calls.reset();
  await limiter.acquire(req, () => {});
  assert.deepEqual(Object.fromEntries(env.calls.counts), {
    UpdateItemCommand: 1,
  });
});

Deno.test("a lost race costs one more write and no read: the failed write's answer carries the item", async () => {
  const clock = manualClock();
  await using env = await freshRepo({ clock });
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 4)]);
  const a = new RateLimiter(env.repo);
  const other = await Repository.open({
    client: env.client,
    stack: env.repo.tableName,
    clock,
  });
  const b = new RateLimiter(other);
  const req = { entityId: "key-1", resource: "api", consume: { rpm: 1 } };
  await a.acquire(req, () => {}); // a knows 3 tokens are left
  await b.acquire(req, () => {});
  await b.acquire(req, () => {}); // 1 left; a still thinks 3
  // b's plain writes moved nothing a's plain write depends on: one call.
  env.calls.reset();
  await a.acquire(req, () => {});
  assert.deepEqual(Object.fromEntries(env.calls.counts), {
    UpdateItemCommand: 1,
  });
  // a thinks 2 are left, the bucket is empty: the write fails, and the
  // refusal is decided from its answer (ALL_OLD), with no read.
  env.calls.reset();
  await assert.rejects(a.acquire(req, () => {}), RateLimitExceeded);
  assert.deepEqual(Object.fromEntries(env.calls.counts), {
    UpdateItemCommand: 1,
  });
  // 30 s after the new bucket's 600 ms holdback (2 tokens refilled) b
  // refills the bucket: rf moves, a's view is stale.
  clock.advance(30_600);
  await b.acquire(req, () => {});
  env.calls.reset();
  await a.acquire(req, () => {});
  // a's refill write fails on rf, its answer shows 1 token: a plain write takes it.
  assert.deepEqual(Object.fromEntries(env.calls.counts), {
    UpdateItemCommand: 2,
  });
  const stored = await env.repo.getBucketItem("key-1", "api", 0);
  assert.equal(stored?.limits.get("rpm")?.tk, 0n);
});
