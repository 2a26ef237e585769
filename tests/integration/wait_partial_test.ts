/**
 * Waiting (`wait: { maxMs }`, `signal`) and partial grants (`min`) on
 * DynamoDB Local: with cascade, several limits, rollback, cancellation and
 * requests that can never fit. Every test checks the stored counters
 * (`b_<name>_tc`, the net tokens consumed) as well as the returned values.
 * Waiting runs on the real clock with refill periods of a second or two and
 * generous slack on every timing bound.
 */
import assert from "node:assert/strict";
import {
  Limit,
  RateLimiter,
  RateLimitExceeded,
  RequestExceedsCapacity,
  ValidationError,
} from "../../mod.ts";
import { freshRepo, manualClock } from "./_harness.ts";
import { num, rawBucket, writeCount } from "./_stored.ts";

const START = Date.UTC(2030, 0, 15, 12, 0, 0);

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  assert.fail("expected a rejection");
}

// ------------------------------------------------------------ waiting

Deno.test("acquire() with wait admits each request once its Retry-After has passed, charging child and parent once each", async () => {
  await using env = await freshRepo();
  const limiter = new RateLimiter(env.repo, { refusalCacheSize: 0 });
  // The parent is the tighter limit: 2 tokens, 2 per second.
  await env.repo.setSystemDefaults([Limit.custom("rps", 10, 10, 1)]);
  await env.repo.createEntity("org");
  await env.repo.createEntity("key", { parentId: "org", cascade: true });
  await env.repo.setLimits("org", [Limit.custom("rps", 2, 2, 1)], {
    resource: "api",
  });
  const req = {
    entityId: "key",
    resource: "api",
    consume: { rps: 1 },
    wait: { maxMs: 10_000 },
  };
  const t0 = Date.now();
  const admittedAt: number[] = [];
  for (let i = 0; i < 6; i++) {
    await limiter.acquire(req, (lease) => {
      assert.deepEqual(lease.granted, { rps: 1 });
      admittedAt.push(Date.now() - t0);
    });
  }
  // 2 at once, then one every 500 ms: the last no sooner than 1.9 s (real
  // clock, so the lower bound is exact up to clock granularity) and well
  // before maxMs (generous upper bound for a loaded machine).
  const last = admittedAt[5] as number;
  assert.ok(last >= 1900, `admitted at ${admittedAt.join(", ")} ms`);
  assert.ok(last < 9000, `admitted at ${admittedAt.join(", ")} ms`);
  const child = await rawBucket(env.client, env.repo, "key", "api");
  const parent = await rawBucket(env.client, env.repo, "org", "api");
  assert.equal(num(child, "b_rps_tc"), 6000, "no try charged twice");
  assert.equal(num(parent, "b_rps_tc"), 6000);
});

Deno.test("acquire() with wait on several limits holds nothing while waiting and charges all of them at once", async () => {
  await using env = await freshRepo();
  const limiter = new RateLimiter(env.repo, { refusalCacheSize: 0 });
  // tps refills 1000 per second; rpm has plenty.
  await env.repo.setSystemDefaults([
    Limit.custom("rpm", 100, 100, 60),
    Limit.custom("tps", 1000, 1000, 1),
  ]);
  await limiter.acquire({
    entityId: "k",
    resource: "llm",
    consume: { rpm: 1, tps: 1000 },
  }, () => {});
  const waiting = limiter.acquire({
    entityId: "k",
    resource: "llm",
    consume: { rpm: 1, tps: 800 },
    wait: { maxMs: 5000 },
  });
  // While it waits (about 800 ms), the rpm it also asks is not held.
  await new Promise((r) => setTimeout(r, 300));
  const during = await rawBucket(env.client, env.repo, "k", "llm");
  const lease = await waiting;
  assert.equal(num(during, "b_rpm_tc"), 1000, "rpm not held while waiting");
  assert.equal(num(during, "b_tps_tc"), 1_000_000);
  assert.deepEqual(lease.granted, { rpm: 1, tps: 800 });
  await lease.commit();
  const after = await rawBucket(env.client, env.repo, "k", "llm");
  assert.equal(num(after, "b_rpm_tc"), 2000);
  assert.equal(num(after, "b_tps_tc"), 1_800_000);
});

Deno.test("acquire() with wait refuses at once when the Retry-After ends after maxMs, and charges nothing", async () => {
  await using env = await freshRepo();
  const limiter = new RateLimiter(env.repo, { refusalCacheSize: 0 });
  await env.repo.setSystemDefaults([Limit.custom("rpm", 2, 2, 60)]);
  const req = { entityId: "k", resource: "api", consume: { rpm: 2 } };
  await limiter.acquire(req, () => {});
  const t0 = Date.now();
  const e = await rejection(
    limiter.acquire({ ...req, wait: { maxMs: 1500 } }, () => {}),
  );
  assert.ok(e instanceof RateLimitExceeded, String(e));
  assert.ok(e.retryAfterSeconds > 50, `${e.retryAfterSeconds}`);
  assert.ok(Date.now() - t0 < 1400, "did not sleep for nothing");
  const item = await rawBucket(env.client, env.repo, "k", "api");
  assert.equal(num(item, "b_rpm_tc"), 2000);
});

Deno.test("acquire() with wait gives up after maxMs with the last refusal when others keep taking the tokens", async () => {
  await using env = await freshRepo();
  const limiter = new RateLimiter(env.repo, { refusalCacheSize: 0 });
  const greedy = new RateLimiter(env.repo, { refusalCacheSize: 0 });
  // 4 tokens per second; the waiter wants 3, two greedy loops take 2 as
  // soon as they are there (the bucket seldom holds 3, even when a loaded
  // machine slows the loops down).
  await env.repo.setSystemDefaults([Limit.custom("rps", 4, 4, 1)]);
  const stop = AbortSignal.timeout(2500);
  const loop = async () => {
    while (!stop.aborted) {
      await greedy.acquire(
        { entityId: "k", resource: "api", consume: { rps: 2 } },
        () => {},
      ).catch(() => {});
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  const hog = Promise.all([loop(), loop()]);
  await new Promise((r) => setTimeout(r, 200));
  const t0 = Date.now();
  const e = await rejection(limiter.acquire({
    entityId: "k",
    resource: "api",
    consume: { rps: 3 },
    wait: { maxMs: 1200 },
  }));
  const took = Date.now() - t0;
  await hog;
  assert.ok(e instanceof RateLimitExceeded, String(e));
  assert.ok(took < 1200 + 2500, `took ${took} ms`);
});

Deno.test("acquire() with wait is cancelled by its signal: rejects with the reason and charges nothing", async () => {
  await using env = await freshRepo();
  const limiter = new RateLimiter(env.repo, {
    refusalCacheSize: 0,
    onError: () => {},
  });
  await env.repo.setSystemDefaults([Limit.custom("rps", 2, 2, 4)]);
  await env.repo.createEntity("org");
  await env.repo.createEntity("key", { parentId: "org", cascade: true });
  const req = { entityId: "key", resource: "api", consume: { rps: 2 } };
  await limiter.acquire(req, () => {});
  const ac = new AbortController();
  const reason = new Error("client disconnected");
  setTimeout(() => ac.abort(reason), 300);
  const t0 = Date.now();
  const e = await rejection(
    limiter.acquire({
      ...req,
      wait: { maxMs: 10_000 },
      signal: ac.signal,
      // Even with "allow", a cancelled wait is not an unchecked admission.
      onUnavailable: "allow",
    }, () => assert.fail("body must not run")),
  );
  assert.equal(e, reason);
  assert.ok(Date.now() - t0 < 2500, "ended at the abort, not the refill");
  const child = await rawBucket(env.client, env.repo, "key", "api");
  const parent = await rawBucket(env.client, env.repo, "org", "api");
  assert.equal(num(child, "b_rps_tc"), 2000);
  assert.equal(num(parent, "b_rps_tc"), 2000);
});

Deno.test("acquire() with wait never waits for a request that can never fit", async () => {
  await using env = await freshRepo();
  const limiter = new RateLimiter(env.repo);
  await env.repo.setSystemDefaults([Limit.custom("rps", 5, 5, 1)]);
  await env.repo.createEntity("org");
  await env.repo.createEntity("key", { parentId: "org", cascade: true });
  await env.repo.setLimits("org", [Limit.custom("rps", 3, 3, 1)], {
    resource: "api",
  });
  env.calls.reset();
  for (const consume of [{ rps: 6 }, { rps: 4 }]) {
    const t0 = Date.now();
    const e = await rejection(limiter.acquire({
      entityId: "key",
      resource: "api",
      consume,
      wait: { maxMs: 30_000 },
    }));
    assert.ok(e instanceof RequestExceedsCapacity, String(e));
    assert.equal(e.code, "REQUEST_EXCEEDS_CAPACITY");
    assert.ok(Date.now() - t0 < 2000);
  }
  assert.equal(writeCount(env.calls), 0, "nothing written");
});

Deno.test("acquire() rejects a bad wait with a ValidationError naming the field", async () => {
  await using env = await freshRepo();
  const limiter = new RateLimiter(env.repo);
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 5)]);
  for (const wait of [{ maxMs: -1 }, { maxMs: NaN }, null]) {
    const e = await rejection(limiter.acquire({
      entityId: "k",
      resource: "api",
      consume: { rpm: 1 },
      // deno-lint-ignore no-explicit-any -- a caller without types
      wait: wait as any,
    }));
    assert.ok(e instanceof ValidationError, String(e));
    assert.match(e.field, /^wait/);
  }
});

Deno.test("acquire() with wait on a concurrency limit is admitted when a holder ends its lease, long before the slot's deadline", async () => {
  await using env = await freshRepo();
  const limiter = new RateLimiter(env.repo, { refusalCacheSize: 0 });
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 100)]);
  const inflight = Limit.concurrent("inflight", 1, { leaseMs: 30_000 });
  const req = {
    entityId: "k",
    resource: "api",
    consume: { rpm: 1 },
    concurrency: [inflight],
  };
  const first = await limiter.acquire(req);
  // Without waiting the second is refused; with wait it polls the slot.
  await assert.rejects(limiter.acquire(req), RateLimitExceeded);
  setTimeout(() => void first.commit(), 300);
  const t0 = Date.now();
  const second = await limiter.acquire({ ...req, wait: { maxMs: 5000 } });
  const took = Date.now() - t0;
  assert.ok(took >= 250 && took < 4000, `admitted after ${took} ms`);
  await second.commit();
  const item = await rawBucket(env.client, env.repo, "k", "api");
  assert.equal(
    num(item, "b_rpm_tc"),
    2000,
    "the refused tries charged nothing",
  );
});

// ------------------------------------------------------------ partial grants

Deno.test("acquire() with min grants what the cascade parent has left, charges both that much, and rolls back", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const limiter = new RateLimiter(env.repo);
  await env.repo.setSystemDefaults([
    Limit.perMinute("rpm", 10),
    Limit.perMinute("tpm", 10_000),
  ]);
  await env.repo.createEntity("org");
  await env.repo.createEntity("key", { parentId: "org", cascade: true });
  await env.repo.setLimits("org", [Limit.perMinute("tpm", 3000)], {
    resource: "llm",
  });
  const req = {
    entityId: "key",
    resource: "llm",
    consume: { rpm: 1, tpm: 4000 },
    min: { tpm: 500 },
  };
  const lease = await limiter.acquire(req);
  assert.deepEqual(lease.granted, { rpm: 1, tpm: 3000 });
  assert.deepEqual(lease.consumed, { rpm: 1, tpm: 6000 }, "child + parent");
  let child = await rawBucket(env.client, env.repo, "key", "llm");
  let parent = await rawBucket(env.client, env.repo, "org", "llm");
  assert.equal(num(child, "b_tpm_tc"), 3_000_000);
  assert.equal(num(child, "b_rpm_tc"), 1000);
  assert.equal(num(parent, "b_tpm_tc"), 3_000_000);
  await lease.rollback();
  child = await rawBucket(env.client, env.repo, "key", "llm");
  parent = await rawBucket(env.client, env.repo, "org", "llm");
  assert.equal(num(child, "b_tpm_tc"), 0);
  assert.equal(num(child, "b_tpm_tk"), 10_000_000);
  assert.equal(num(parent, "b_tpm_tk"), 3_000_000);

  // Spend 2800 of the parent's 3000; the next grant is the 200 left... below min.
  await limiter.acquire({ ...req, consume: { rpm: 1, tpm: 2800 } }, () => {});
  const e = await rejection(limiter.acquire(req));
  assert.ok(e instanceof RateLimitExceeded, String(e));
  assert.equal(e.primaryViolation.entityId, "org");
  assert.equal(e.primaryViolation.requested, 500, "refusal states min");
  assert.ok(
    Math.abs(e.retryAfterSeconds - 6.6) < 0.01,
    `300 tokens at 50/s, after the new bucket's 600 ms holdback: ${e.retryAfterSeconds}`,
  );
  child = await rawBucket(env.client, env.repo, "key", "llm");
  assert.equal(num(child, "b_rpm_tc"), 1000, "a refusal charged nothing");
  // Once 300 more have refilled, min fits and the most available is granted.
  clock.advance(6600);
  const l2 = await limiter.acquire(req);
  assert.deepEqual(l2.granted, { rpm: 1, tpm: 500 });
  l2.adjust({ tpm: -100 }); // the answer used 400
  await l2.commit();
  parent = await rawBucket(env.client, env.repo, "org", "llm");
  assert.equal(num(parent, "b_tpm_tc"), (2800 + 400) * 1000);
});

Deno.test("acquire() with min refuses when a limit without min refuses, whatever the flexible ones have", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const limiter = new RateLimiter(env.repo);
  await env.repo.setSystemDefaults([
    Limit.perMinute("rpm", 1),
    Limit.perMinute("tpm", 10_000),
  ]);
  const req = {
    entityId: "k",
    resource: "llm",
    consume: { rpm: 1, tpm: 4000 },
    min: { tpm: 1 },
  };
  await limiter.acquire(req, () => {});
  const e = await rejection(limiter.acquire(req));
  assert.ok(e instanceof RateLimitExceeded, String(e));
  assert.deepEqual(e.violations.map((v) => v.limitName), ["rpm"]);
  const item = await rawBucket(env.client, env.repo, "k", "llm");
  assert.equal(num(item, "b_tpm_tc"), 4_000_000);
  assert.equal(num(item, "b_rpm_tc"), 1000);
});

Deno.test("acquire() with min clamps an ask over the capacity, and refuses at once when min is over it", async () => {
  const clock = manualClock(START);
  await using env = await freshRepo({ clock });
  const limiter = new RateLimiter(env.repo);
  await env.repo.setSystemDefaults([Limit.perMinute("tpm", 8000)]);
  const lease = await limiter.acquire({
    entityId: "k",
    resource: "llm",
    consume: { tpm: 20_000 },
    min: { tpm: 1000 },
  });
  assert.deepEqual(lease.granted, { tpm: 8000 });
  await lease.commit();
  env.calls.reset();
  const e = await rejection(limiter.acquire({
    entityId: "k",
    resource: "llm",
    consume: { tpm: 20_000 },
    min: { tpm: 9000 },
    wait: { maxMs: 30_000 },
  }));
  assert.ok(e instanceof RequestExceedsCapacity, String(e));
  assert.equal(e.statuses[0]?.requested, 9000);
  assert.equal(writeCount(env.calls), 0);
});

Deno.test("acquire() with min and wait waits until min fits, then grants the most available", async () => {
  await using env = await freshRepo();
  const limiter = new RateLimiter(env.repo, { refusalCacheSize: 0 });
  // 1000 tokens, 1000 per second.
  await env.repo.setSystemDefaults([Limit.custom("tps", 1000, 1000, 1)]);
  await limiter.acquire({
    entityId: "k",
    resource: "llm",
    consume: { tps: 1000 },
  }, () => {});
  const t0 = Date.now();
  const lease = await limiter.acquire({
    entityId: "k",
    resource: "llm",
    consume: { tps: 1000 },
    min: { tps: 300 },
    wait: { maxMs: 5000 },
  });
  const took = Date.now() - t0;
  const g = lease.granted.tps ?? 0;
  assert.ok(g >= 300 && g <= 1000, `granted ${g}`);
  assert.ok(took >= 250, `waited ${took} ms for 300 tokens`);
  await lease.commit();
  const item = await rawBucket(env.client, env.repo, "k", "llm");
  assert.equal(num(item, "b_tps_tc"), (1000 + g) * 1000);
});

Deno.test("acquire() with min: concurrent partial grants never admit more than the bucket holds", async () => {
  await using env = await freshRepo();
  // Refill of about 2 tokens a second (per hour): the parent's 7000 plus
  // what refilled during the test is the bound.
  await env.repo.setSystemDefaults([Limit.custom("tpm", 10_000, 10_000, 3600)]);
  await env.repo.createEntity("org");
  await env.repo.createEntity("key", { parentId: "org", cascade: true });
  await env.repo.setLimits("org", [Limit.custom("tpm", 7000, 7000, 3600)], {
    resource: "llm",
  });
  const limiters = Array.from(
    { length: 4 },
    () => new RateLimiter(env.repo, { refusalCacheSize: 0 }),
  );
  // Warm every limiter's caches so the calls race on the fast path.
  for (const l of limiters) {
    await l.acquire({
      entityId: "key",
      resource: "llm",
      consume: { tpm: 0 },
    }, () => {});
  }
  const t0 = Date.now();
  const results = await Promise.allSettled(
    Array.from(
      { length: 8 },
      (_, i) =>
        (limiters[i % 4] as RateLimiter).acquire({
          entityId: "key",
          resource: "llm",
          consume: { tpm: 2500 },
          min: { tpm: 100 },
        }),
    ),
  );
  const refill = Math.ceil((Date.now() - t0 + 1000) * 7000 / 3_600_000);
  let granted = 0;
  for (const r of results) {
    if (r.status === "fulfilled") {
      const g = r.value.granted.tpm ?? 0;
      assert.ok(g >= 100 && g <= 2500, `granted ${g}`);
      granted += g;
      await r.value.commit();
    } else {
      assert.ok(r.reason instanceof RateLimitExceeded, String(r.reason));
    }
  }
  assert.ok(granted <= 7000 + refill, `granted ${granted} in all`);
  assert.ok(granted >= 2500, `granted ${granted}`);
  const parent = await rawBucket(env.client, env.repo, "org", "llm");
  const child = await rawBucket(env.client, env.repo, "key", "llm");
  assert.equal(num(parent, "b_tpm_tc"), granted * 1000);
  assert.equal(num(child, "b_tpm_tc"), granted * 1000);
  assert.ok(num(parent, "b_tpm_tk") >= 0);
});

Deno.test("acquire() rejects a bad min with a ValidationError naming the field, before any write", async () => {
  await using env = await freshRepo();
  const limiter = new RateLimiter(env.repo);
  await env.repo.setSystemDefaults([Limit.perMinute("tpm", 5000)]);
  env.calls.reset();
  for (
    const [min, field] of [
      [{ tpm: 4001 }, "min.tpm"],
      [{ rpm: 1 }, "min.rpm"],
      [{ tpm: 2.5 }, "min.tpm"],
      [{ tpm: -1 }, "min.tpm"],
    ] as [Record<string, number>, string][]
  ) {
    const e = await rejection(limiter.acquire({
      entityId: "k",
      resource: "api",
      consume: { tpm: 4000 },
      min,
    }));
    assert.ok(e instanceof ValidationError, String(e));
    assert.equal(e.field, field);
  }
  assert.equal(writeCount(env.calls), 0);
});
