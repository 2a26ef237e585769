/**
 * The admission findings of issue "Admission you can trust", each reproduced
 * on DynamoDB Local with the real clock (shifted where a test needs a bucket
 * that has been idle for a minute), several clients with their own caches,
 * and concurrency. Every test asserts against what the ideal token bucket
 * allows.
 */
import assert from "node:assert/strict";
import { DynamoDBClient, UpdateItemCommand } from "@aws-sdk/client-dynamodb";
import {
  type Clock,
  CommitFailedError,
  Lease,
  Limit,
  RateLimiter,
  RateLimiterUnavailable,
  RateLimitExceeded,
  Repository,
  RequestExceedsCapacity,
  type StrandedCharge,
} from "../../mod.ts";
import { type FaultyClient, faultyClient, silentEndpoint } from "./_faults.ts";
import { sleep } from "../../core/clock.ts";
import { freshRepo, localClient } from "./_harness.ts";
import { num, rawBucket } from "./_stored.ts";

/** The real clock shifted by an offset that a test can change (the clock keeps running). */
function shiftedClock(offsetMs = 0): Clock & { shift(ms: number): void } {
  let off = offsetMs;
  return {
    now: () => Date.now() + off,
    sleep: (ms: number, signal?: AbortSignal) => sleep(ms, signal),
    shift(ms: number) {
      off = ms;
    },
  };
}

/** Another client of the same table: its own SDK client, repository, caches and limiter. */
async function otherClient(
  repo: Repository,
  options: { clock?: Clock; clockSync?: boolean } = {},
): Promise<
  { repo: Repository; limiter: RateLimiter } & AsyncDisposable
> {
  const { client } = await localClient();
  const r = await Repository.open({
    client,
    stack: repo.tableName,
    namespace: repo.namespaceName,
    ...options,
  });
  return {
    repo: r,
    limiter: new RateLimiter(r, { onError: () => {} }),
    [Symbol.asyncDispose]() {
      client.destroy();
      return Promise.resolve();
    },
  };
}

async function outcome(p: Promise<unknown>): Promise<"ok" | "refused"> {
  try {
    await p;
    return "ok";
  } catch (e) {
    if (e instanceof RateLimitExceeded) return "refused";
    throw e;
  }
}

Deno.test("finding 1: a bucket idle for 61 s, then a burst of 120 from 4 warm clients, admits at most its capacity plus the refill during the burst", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 60)]);
  // Four clients warmed 61 s ago (their clocks read 61 s back): each took
  // one token, so 56 are stored with an rf a minute old.
  const clocks = Array.from({ length: 4 }, () => shiftedClock(-61_000));
  const clients = await Promise.all(
    clocks.map((clock) => otherClient(env.repo, { clock })),
  );
  try {
    for (const c of clients) {
      await c.limiter.acquire(
        { entityId: "k", resource: "api", consume: { rpm: 1 } },
        () => {},
      );
    }
    for (const clock of clocks) clock.shift(0); // now: idle for 61 s
    const started = Date.now();
    // 120 writes race for one item: on a loaded machine the burst outlasts
    // the default 3 s deadline; the test is about admission, not latency.
    const results = await Promise.all(
      clients.flatMap((c) =>
        Array.from({ length: 30 }, () =>
          outcome(c.limiter.acquire(
            {
              entityId: "k",
              resource: "api",
              consume: { rpm: 1 },
              timeoutMs: 60_000,
            },
            () => {},
          )))
      ),
    );
    const seconds = (Date.now() - started) / 1000;
    const admitted = results.filter((r) => r === "ok").length;
    // Ideal: full (60) after 61 s idle, plus 1 token per second of burst.
    const ideal = 60 + Math.floor(seconds) + 1;
    assert.ok(
      admitted <= ideal,
      `admitted ${admitted} of 120, the ideal bucket allows at most ${ideal}`,
    );
    assert.ok(admitted >= 59, `admitted only ${admitted}: the bucket was full`);
  } finally {
    for (const c of clients) await c[Symbol.asyncDispose]();
  }
});

Deno.test("finding 2: giving back tokens never lifts a bucket above its capacity", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.custom("rp10s", 10, 10, 10)]);
  const clock = shiftedClock(-11_000);
  await using a = await otherClient(env.repo, { clock });
  // A lease holds all 10 tokens for 11 s, while refill tops the bucket up.
  const held = await a.limiter.acquire({
    entityId: "k",
    resource: "api",
    consume: { rp10s: 10 },
  });
  const rolled = await a.limiter.acquire({
    entityId: "k",
    resource: "api",
    consume: { rp10s: 0 },
  });
  clock.shift(0);
  held.adjust({ rp10s: -9 });
  await held.commit();
  await rolled.rollback();
  const raw = await rawBucket(env.client, env.repo, "k", "api");
  assert.ok(
    (num(raw, "b_rp10s_tk") ?? 0) <= 10_000,
    `tk ${num(raw, "b_rp10s_tk")} on a capacity of 10`,
  );
  // The bucket is full (10); 12 requests of 1 now admit at most 10 (+1 refilled meanwhile).
  await using b = await otherClient(env.repo);
  const results = await Promise.all(
    Array.from({ length: 12 }, () =>
      outcome(b.limiter.acquire(
        { entityId: "k", resource: "api", consume: { rp10s: 1 } },
        () => {},
      ))),
  );
  const admitted = results.filter((r) => r === "ok").length;
  assert.ok(admitted <= 11, `admitted ${admitted} of 12 on a capacity of 10`);
  // A request larger than the capacity is never admitted.
  await assert.rejects(
    b.limiter.acquire(
      { entityId: "k", resource: "api", consume: { rp10s: 15 } },
      () => {},
    ),
    RequestExceedsCapacity,
  );
});

Deno.test("finding 4: a capacity lowered by another writer (tk left above it) is enforced at once", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.perHour("rph", 100)]);
  await using a = await otherClient(env.repo);
  await a.limiter.acquire(
    { entityId: "k", resource: "api", consume: { rph: 1 } },
    () => {},
  );
  // The Python client's set_limits: cp rewritten (and the stored config),
  // tk (99) left above the new capacity (20).
  await env.repo.setSystemDefaults([Limit.perHour("rph", 20)]);
  await env.client.send(
    new UpdateItemCommand({
      TableName: env.repo.tableName,
      Key: {
        PK: { S: env.repo.bucketPk("k", "api") },
        SK: { S: "#STATE" },
      },
      UpdateExpression: "SET b_rph_cp = :cp, b_rph_ra = :cp",
      ExpressionAttributeValues: { ":cp": { N: "20000" } },
    }),
  );
  // Client `a` still caches capacity 100 for up to a minute.
  const results = await Promise.all(
    Array.from({ length: 30 }, () =>
      outcome(a.limiter.acquire(
        { entityId: "k", resource: "api", consume: { rph: 1 } },
        () => {},
      ))),
  );
  const admitted = results.filter((r) => r === "ok").length;
  assert.ok(admitted <= 20, `admitted ${admitted} on a capacity of 20`);
  const raw = await rawBucket(env.client, env.repo, "k", "api");
  assert.equal(num(raw, "b_rph_cp"), 20_000, "the stale cache wrote 100 back");
});

Deno.test("finding 4: a process with a stale config cache does not write its old limits over a newer change", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.perSecond("rps", 50)]);
  await using stale = await otherClient(env.repo);
  await stale.limiter.acquire(
    { entityId: "k", resource: "api", consume: { rps: 1 } },
    () => {},
  );
  // Another process lowers the limit and its own acquire stores it on the bucket.
  await env.repo.setSystemDefaults([Limit.perSecond("rps", 5)]);
  await using fresh = await otherClient(env.repo);
  await fresh.limiter.acquire(
    { entityId: "k", resource: "api", consume: { rps: 1 } },
    () => {},
  );
  assert.equal(
    num(await rawBucket(env.client, env.repo, "k", "api"), "b_rps_cp"),
    5000,
  );
  // The stale process (cache: 50 per second) keeps acquiring for 0.6 s.
  const started = Date.now();
  let admitted = 0;
  while (Date.now() - started < 600) {
    if (
      await outcome(stale.limiter.acquire(
        { entityId: "k", resource: "api", consume: { rps: 1 } },
        () => {},
      )) === "ok"
    ) admitted++;
    await sleep(20);
  }
  const seconds = (Date.now() - started) / 1000;
  assert.equal(
    num(await rawBucket(env.client, env.repo, "k", "api"), "b_rps_cp"),
    5000,
    "the stale process wrote its cached capacity back",
  );
  // At most the 4 left plus 5 per second since.
  const ideal = 4 + Math.ceil(seconds * 5) + 1;
  assert.ok(admitted <= ideal, `admitted ${admitted}, ideal at most ${ideal}`);
});

Deno.test("finding 7: a request larger than the capacity is refused as never satisfiable, without a write", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.perSecond("rps", 5)]);
  const limiter = new RateLimiter(env.repo);
  await limiter.acquire(
    { entityId: "k", resource: "api", consume: { rps: 1 } },
    () => {},
  );
  env.calls.reset();
  const err = await limiter.acquire(
    { entityId: "k", resource: "api", consume: { rps: 8 } },
    () => assert.fail("must not run"),
  ).then(() => null, (e) => e);
  assert.ok(err instanceof RequestExceedsCapacity, String(err));
  assert.equal(err.code, "REQUEST_EXCEEDS_CAPACITY");
  assert.equal(err.retryable, false);
  assert.match(err.message, /rps asks 8 but its capacity is 5/);
  assert.ok(!(err instanceof RateLimitExceeded), "no Retry-After to loop on");
  assert.equal(env.calls.total(), 0, "decided from the cached config");
});

Deno.test("finding 8: a client whose clock is 60 s ahead is corrected by the server's Date and cannot admit a second bucket", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  const ahead = shiftedClock(60_000);
  await using fast = await otherClient(env.repo, {
    clock: ahead,
    clockSync: true,
  });
  await using honest = await otherClient(env.repo);
  // The honest client drains the bucket.
  let admitted = 0;
  for (let i = 0; i < 10; i++) {
    if (
      await outcome(honest.limiter.acquire(
        { entityId: "k", resource: "api", consume: { rpm: 1 } },
        () => {},
      )) === "ok"
    ) admitted++;
  }
  assert.equal(admitted, 10);
  // The skewed client would see 60 s of refill; corrected, it sees about none.
  for (let i = 0; i < 10; i++) {
    if (
      await outcome(fast.limiter.acquire(
        { entityId: "k", resource: "api", consume: { rpm: 1 } },
        () => {},
      )) === "ok"
    ) admitted++;
  }
  assert.ok(admitted <= 12, `admitted ${admitted} in ~1 s on 10 per minute`);
  const rf = num(await rawBucket(env.client, env.repo, "k", "api"), "rf") ?? 0;
  assert.ok(
    rf <= Date.now() + 2_500,
    `rf is ${rf - Date.now()} ms in the future`,
  );
  const bounds = fast.repo.clockOffsetBounds;
  assert.ok(
    bounds && bounds[1] <= -58_000 && bounds[0] >= -62_500,
    `offset bounds ${bounds}`,
  );
});

Deno.test("await using: a lease left without commit is rolled back, and the tokens are back", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.perHour("rph", 3)]);
  const limiter = new RateLimiter(env.repo);
  for (let i = 0; i < 3; i++) {
    await using lease = await limiter.acquire({
      entityId: "k",
      resource: "api",
      consume: { rph: 1 },
    });
    assert.equal(lease.state, "open");
  }
  // All three were given back: three more fit.
  for (let i = 0; i < 3; i++) {
    await limiter.acquire(
      { entityId: "k", resource: "api", consume: { rph: 1 } },
      () => {},
    );
  }
  await assert.rejects(
    limiter.acquire(
      { entityId: "k", resource: "api", consume: { rph: 1 } },
      () => {},
    ),
    RateLimitExceeded,
  );
});

// ------------------------------------------------------------ injected faults

/** A client of the same table whose SDK client injects faults. */
async function faultyOther(
  repo: Repository,
  options: { onStranded?: (c: StrandedCharge) => void; timeoutMs?: number } =
    {},
): Promise<
  & { repo: Repository; limiter: RateLimiter; fc: FaultyClient }
  & AsyncDisposable
> {
  const fc = await faultyClient({ maxAttempts: 3 });
  const r = await Repository.open({
    client: fc.client,
    stack: repo.tableName,
    namespace: repo.namespaceName,
  });
  return {
    repo: r,
    fc,
    limiter: new RateLimiter(r, {
      onError: () => {},
      ...(options.onStranded ? { onStranded: options.onStranded } : {}),
      ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}),
    }),
    [Symbol.asyncDispose]() {
      fc[Symbol.dispose]();
      return Promise.resolve();
    },
  };
}

async function tc(
  env: { client: DynamoDBClient; repo: Repository },
  limit: string,
): Promise<number> {
  return num(
    await rawBucket(env.client, env.repo, "k", "api"),
    `b_${limit}_tc`,
  ) ??
    0;
}

Deno.test("finding 3: a write applied but answered with a 500 is not applied again by the SDK's retry (acquire)", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.perHour("rph", 10)]);
  const stranded: StrandedCharge[] = [];
  await using c = await faultyOther(env.repo, {
    onStranded: (s) => stranded.push(s),
  });
  const req = { entityId: "k", resource: "api", consume: { rph: 1 } };
  await c.limiter.acquire(req, () => {}); // warm: the next acquire is one UpdateItem
  assert.equal(await tc(env, "rph"), 1000);
  c.fc.faults.inject({
    command: "UpdateItem",
    times: 1,
    fault: { kind: "afterApply", error: "InternalServerError" },
  });
  const err = await c.limiter.acquire(req, () => {}).then(() => null, (e) => e);
  assert.ok(err instanceof RateLimiterUnavailable, String(err));
  assert.equal(await tc(env, "rph"), 2000, "applied once, not twice");
  // The SDK's retry of the 500 was stopped before it left: one attempt.
  assert.equal(c.fc.calls.attempts.get("UpdateItem"), 1, "not resent");
  assert.equal(stranded.length, 1, "the possibly applied charge is reported");
  assert.equal(stranded[0]?.kind, "debit");
  assert.deepEqual(stranded[0]?.amounts, { rph: 1 });
  // A network reset after apply: the same.
  c.fc.faults.inject({
    command: "UpdateItem",
    times: 1,
    fault: { kind: "afterApply", error: "ECONNRESET" },
  });
  await assert.rejects(
    c.limiter.acquire(req, () => {}),
    RateLimiterUnavailable,
  );
  assert.equal(await tc(env, "rph"), 3000);
  // Throttling certainly did not apply: the SDK may retry it, and it counts once.
  c.fc.faults.inject({
    command: "UpdateItem",
    times: 1,
    fault: {
      kind: "beforeApply",
      error: "ProvisionedThroughputExceededException",
    },
  });
  await c.limiter.acquire(req, () => {});
  assert.equal(await tc(env, "rph"), 4000);
});

Deno.test("finding 3: a rollback answered with a 500 after it applied gives back once (3 left stay 3)", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.perHour("rph", 10)]);
  const stranded: StrandedCharge[] = [];
  await using c = await faultyOther(env.repo, {
    onStranded: (s) => stranded.push(s),
  });
  const req = { entityId: "k", resource: "api", consume: { rph: 1 } };
  for (let i = 0; i < 7; i++) await c.limiter.acquire(req, () => {});
  const lease = await c.limiter.acquire(req);
  c.fc.faults.inject({
    command: "UpdateItem",
    times: 1,
    fault: { kind: "afterApply", error: "InternalServerError" },
  });
  // The give-back may have applied: it is not resent, the lease is closed and
  // the uncertain give-back is reported (at worst the token stays taken).
  await lease.rollback().catch(() => {});
  assert.equal(await tc(env, "rph"), 7000, "the give-back applied once");
  let admitted = 0;
  for (let i = 0; i < 10; i++) {
    if (await outcome(c.limiter.acquire(req, () => {})) === "ok") admitted++;
  }
  assert.equal(admitted, 3, `admitted ${admitted} with 3 left`);
  assert.equal(lease.state, "rolled_back");
  assert.deepEqual(stranded.map((s) => [s.kind, s.amounts]), [
    ["giveback", { rph: 1 }],
  ]);
});

Deno.test("finding 3: an acquire that outlives its deadline reports the charge it may have left", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.perHour("rph", 100)]);
  const stranded: StrandedCharge[] = [];
  await using c = await faultyOther(env.repo, {
    onStranded: (s) => stranded.push(s),
    timeoutMs: 400,
  });
  const req = { entityId: "k", resource: "api", consume: { rph: 1 } };
  await c.limiter.acquire(req, () => {});
  // The write reaches DynamoDB and applies; its answer never comes back.
  c.fc.faults.inject({
    command: "UpdateItem",
    times: 3,
    fault: { kind: "hang", phase: "response" },
  });
  for (let i = 0; i < 3; i++) {
    const t = Date.now();
    await assert.rejects(
      c.limiter.acquire(req, () => {}),
      RateLimiterUnavailable,
    );
    assert.ok(Date.now() - t < 400 + 300, `took ${Date.now() - t} ms`);
  }
  const applied = c.fc.faults.log.filter((r) => r.kind === "hang" && r.applied)
    .length;
  assert.equal(await tc(env, "rph"), 1000 + applied * 1000);
  // The answers are lost: each write's late outcome is unknown (not
  // "applied"), and its charge is reported when the write ends.
  c.fc.faults.releaseAll();
  for (let i = 0; i < 60 && stranded.length < 3; i++) await sleep(50);
  assert.equal(stranded.length, 3, "every timed-out charge is reported");
  assert.equal(await tc(env, "rph"), 1000 + applied * 1000, "none given back");
});

Deno.test("finding 5: a TransactionConflictException on the fast-path UpdateItem is retried, charged once", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.perHour("rph", 10)]);
  await using c = await faultyOther(env.repo);
  const req = { entityId: "k", resource: "api", consume: { rph: 1 } };
  await c.limiter.acquire(req, () => {});
  c.fc.faults.inject({
    command: "UpdateItem",
    times: 2,
    fault: { kind: "beforeApply", error: "TransactionConflictException" },
  });
  await c.limiter.acquire(req, () => {});
  assert.equal(await tc(env, "rph"), 2000);
  // Two refused attempts (DynamoDB applied neither), then the write: 3, one charge.
  assert.equal(c.fc.calls.attempts.get("UpdateItem"), 3);
});

Deno.test("finding 6: with DynamoDB silent, every call returns within its deadline; allow mode admits unchecked", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.perHour("rph", 10)]);
  await using c = await faultyOther(env.repo, { timeoutMs: 300 });
  const req = { entityId: "k", resource: "api", consume: { rph: 1 } };
  const lease = await c.limiter.acquire(req);
  lease.adjust({ rph: 2 });
  c.fc.faults.inject({ fault: { kind: "hang", phase: "request" } });
  const within = async (p: Promise<unknown>, ms: number) => {
    const t = Date.now();
    const e = await p.then(() => null, (x) => x);
    assert.ok(Date.now() - t < ms + 250, `took ${Date.now() - t} ms`);
    return e;
  };
  assert.ok(
    await within(c.limiter.acquire(req, () => {}), 300) instanceof
      RateLimiterUnavailable,
  );
  const unchecked = await within(
    c.limiter.acquire({ ...req, onUnavailable: "allow" }).then((l) => {
      assert.equal(l.unchecked, true);
      throw l;
    }),
    300,
  );
  assert.ok(unchecked instanceof Lease);
  assert.ok(
    await within(
      c.limiter.acquire({ ...req, timeoutMs: 100 }, () => {}),
      100,
    ) instanceof RateLimiterUnavailable,
  );
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 50);
  assert.ok(
    await within(
      c.limiter.acquire({ ...req, signal: ac.signal }, () => {}),
      50,
    ) instanceof RateLimiterUnavailable,
  );
  assert.ok(
    await within(
      c.limiter.available({ entityId: "k", resource: "api" }),
      300,
    ) instanceof
      RateLimiterUnavailable,
  );
  // The commit fails before applying: the lease stays open, the adjustment is kept.
  assert.ok(
    await within(lease.commit(), 300) instanceof RateLimiterUnavailable,
  );
  assert.equal(lease.state, "open");
  c.fc.faults.clear();
  c.fc.faults.releaseAll();
  await lease.commit();
  assert.equal(lease.state, "committed");
  assert.equal(await tc(env, "rph"), 3000, "1 acquired + 2 adjusted, once");
});

Deno.test("a callback whose commit fails in block mode hands back its result and the open lease", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([Limit.perHour("rph", 10)]);
  await using c = await faultyOther(env.repo, { timeoutMs: 300 });
  const req = { entityId: "k", resource: "api", consume: { rph: 1 } };
  await c.limiter.acquire(req, () => {});
  const err = await c.limiter.acquire(req, (lease) => {
    lease.adjust({ rph: 1 });
    c.fc.faults.inject({
      command: "UpdateItem",
      fault: { kind: "beforeApply", error: "InternalServerError" },
    });
    return "the model's answer";
  }).then(() => null, (e) => e);
  assert.ok(err instanceof CommitFailedError, String(err));
  assert.equal(err.result, "the model's answer");
  c.fc.faults.clear();
  await err.lease.commit();
  assert.equal(await tc(env, "rph"), 3000);
});

Deno.test("Repository.open on a silent endpoint fails as RateLimiterUnavailable within its deadline", async () => {
  await using silent = silentEndpoint();
  const client = new DynamoDBClient({
    endpoint: silent.endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
  });
  try {
    const t = Date.now();
    const err = await Repository.open({ client, stack: "t", timeoutMs: 300 })
      .then(() => null, (e) => e);
    assert.ok(err instanceof RateLimiterUnavailable, String(err));
    assert.ok(Date.now() - t < 300 + 250, `took ${Date.now() - t} ms`);
  } finally {
    client.destroy();
  }
});
