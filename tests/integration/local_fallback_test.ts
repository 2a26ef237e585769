/**
 * The local fallback limiter on DynamoDB Local with injected faults and the
 * real clock: while every call hangs (a silent endpoint), answers 500 or is
 * throttled, acquires are admitted from the in-process share of each limit
 * and never more; the stored buckets are not touched; once DynamoDB answers
 * again the limiter uses it. Cascade and several limits: the parent's share
 * bounds the children's local admissions together.
 */
import assert from "node:assert/strict";
import { setTimeout as delay } from "node:timers/promises";
import { type Lease, Limit, RateLimiter, Repository } from "../../mod.ts";
import { type Fault, faultyClient, silentEndpoint } from "./_faults.ts";
import { DynamoBucketStore } from "../../core/store/dynamo_bucket_store.ts";
import { DynamoSlotStore } from "../../core/store/dynamo_slot_store.ts";
import { createTableClient } from "../../core/store/table.ts";
import { currentSignal } from "../../core/transport.ts";
import { inMemoryTelemetry } from "./_telemetry.ts";
import { freshRepo } from "./_harness.ts";
import { num, rawBucket } from "./_stored.ts";
import { type DynamoDBClient, GetItemCommand } from "@aws-sdk/client-dynamodb";

const SHARE = 0.1;
/** 100 per minute: the local share is 10 at once plus 1 every 6 s. */
const RPM = new Limit("rpm", 100, 100, 60);
const TPM = new Limit("tpm", 10_000, 10_000, 60);

/** Most the local share may admit after `ms` of outage (capacity share plus refill share). */
function bound(limit: Limit, perAcquire: number, ms: number): number {
  const tokens = SHARE * limit.capacity +
    SHARE * limit.refillAmount * (ms / 1000) / limit.refillPeriodSeconds;
  return Math.floor(tokens / perAcquire);
}

async function setup() {
  const env = await freshRepo();
  await env.repo.setSystemDefaults([RPM, TPM]);
  await env.repo.createEntity("org");
  await env.repo.createEntity("a", { parentId: "org", cascade: true });
  await env.repo.createEntity("b", { parentId: "org", cascade: true });
  const fc = await faultyClient({ maxAttempts: 3, requestTimeout: 300 });
  const repo = await Repository.open({
    client: fc.client,
    stack: env.repo.tableName,
  });
  const contexts: string[] = [];
  const limiter = new RateLimiter(repo, {
    timeoutMs: 800,
    localFallback: { share: SHARE, probeIntervalMs: 250 },
    onError: (_e, context) => contexts.push(context),
  });
  // Learn the limits and cascade links of every entity used.
  for (const entityId of ["a", "b", "org"]) {
    for (let i = 0; i < 2; i++) {
      await (await limiter.acquire({
        entityId,
        resource: "gpt",
        consume: { rpm: 1 },
      })).rollback();
    }
  }
  return {
    env,
    fc,
    limiter,
    contexts,
    async [Symbol.asyncDispose]() {
      fc[Symbol.dispose]();
      await env[Symbol.asyncDispose]();
    },
  };
}

/** Net tokens consumed per limit as stored (`b_{name}_tc`), on the entity and the parent. */
async function storedTc(
  env: { client: DynamoDBClient; repo: Repository },
): Promise<number[]> {
  const out: number[] = [];
  for (const entityId of ["a", "org"]) {
    const item = await rawBucket(env.client, env.repo, entityId, "gpt");
    out.push(num(item, "b_rpm_tc"), num(item, "b_tpm_tc"));
  }
  return out;
}

const FAULTS: readonly [string, Fault][] = [
  ["a silent endpoint (every call hangs unanswered)", {
    kind: "hang",
    phase: "request",
  }],
  ["500s", { kind: "beforeApply", error: "InternalServerError" }],
  ["throttling", { kind: "beforeApply", error: "ThrottlingException" }],
];

for (const [what, fault] of FAULTS) {
  Deno.test(`acquire() with localFallback admits within the local share during ${what}, then uses DynamoDB again`, async () => {
    await using s = await setup();
    const before = await storedTc(s.env);
    const rule = s.fc.faults.inject({ fault });
    const started = Date.now();
    const held: Lease[] = [];
    let refused = 0;
    // Two children of one parent, each asking rpm 1 and tpm 200.
    for (let i = 0; i < 40; i++) {
      try {
        const lease = await s.limiter.acquire({
          entityId: i % 2 === 0 ? "a" : "b",
          resource: "gpt",
          consume: { rpm: 1, tpm: 200 },
        });
        assert.equal(lease.local, true);
        assert.equal(lease.unchecked, true);
        held.push(lease);
      } catch (e) {
        assert.equal((e as Error).name, "RateLimitExceeded", String(e));
        refused++;
      }
    }
    const elapsed = Date.now() - started;
    // The parent's share bounds both children together: rpm 10 (+ refill), tpm 1000 / 200 = 5 (+ refill).
    const most = Math.min(bound(RPM, 1, elapsed), bound(TPM, 200, elapsed));
    assert.ok(held.length >= 5, `admitted ${held.length}`);
    assert.ok(
      held.length <= most,
      `admitted ${held.length} > ${most} after ${elapsed} ms`,
    );
    assert.equal(held.length + refused, 40);
    assert.ok(s.contexts.includes("local"), "the outage is reported");
    for (const l of held) await l.commit(); // a no-op: nothing is written
    rule.remove();
    // DynamoDB is back: after the probe interval the next acquire reaches it.
    await delay(300);
    const lease = await s.limiter.acquire({
      entityId: "a",
      resource: "gpt",
      consume: { rpm: 1, tpm: 200 },
    });
    assert.equal(lease.local, false);
    await lease.commit();
    // Only the acquire that reached DynamoDB is counted there, on both levels.
    const after = await storedTc(s.env);
    assert.deepEqual(
      after.map((v, i) => v - (before[i] ?? 0)),
      [1000, 200_000, 1000, 200_000],
    );
  });
}

Deno.test("acquire() with localFallback: a rollback gives back to the local bucket only, and onUnavailable 'block' on the call still fails", async () => {
  await using s = await setup();
  s.fc.faults.inject({
    fault: { kind: "beforeApply", error: "InternalServerError" },
  });
  const leases: Lease[] = [];
  for (let i = 0; i < 10; i++) {
    leases.push(
      await s.limiter.acquire({
        entityId: "org",
        resource: "gpt",
        consume: { rpm: 1 },
      }),
    );
  }
  await assert.rejects(
    s.limiter.acquire({
      entityId: "org",
      resource: "gpt",
      consume: { rpm: 1 },
    }),
    { name: "RateLimitExceeded" },
  );
  await (leases[0] as Lease).rollback();
  await s.limiter.acquire({
    entityId: "org",
    resource: "gpt",
    consume: { rpm: 1 },
  }, (l) => assert.equal(l.local, true));
  await assert.rejects(
    s.limiter.acquire({
      entityId: "org",
      resource: "gpt",
      consume: { rpm: 1 },
      onUnavailable: "block",
    }),
    { name: "RateLimiterUnavailable" },
  );
});

Deno.test("acquire() admitted by the local fallback is counted as outcome 'local' in the decision metric and the span", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([RPM]);
  const { exporter, reader, meterProvider, spans, tracerProvider } =
    inMemoryTelemetry();
  const limiter = new RateLimiter(env.repo, {
    telemetry: { meterProvider, tracerProvider },
    localFallback: { share: SHARE },
    onError: () => {},
  });
  const req = { entityId: "k", resource: "gpt", consume: { rpm: 1 } };
  await limiter.acquire(req, () => {});
  await limiter.acquire(req, () => {});
  // An aborted call cannot reach DynamoDB: the local share admits it.
  const gone = AbortSignal.abort(new Error("down"));
  await limiter.acquire(
    { ...req, signal: gone },
    (l) => assert.equal(l.local, true),
  );
  await reader.forceFlush();
  const decisions = exporter.getMetrics().at(-1)?.scopeMetrics
    .find((s) => s.scope.name === "zae-limiter")?.metrics
    .find((m) => m.descriptor.name === "zae_limiter.decisions");
  assert.deepEqual(
    Object.fromEntries(
      (decisions?.dataPoints ?? []).map((p) => [
        String(p.attributes["zae_limiter.outcome"]),
        p.value,
      ]),
    ),
    { admitted: 2, local: 1 },
  );
  assert.deepEqual(
    spans.getFinishedSpans().map((s) => s.attributes["zae_limiter.outcome"]),
    ["admitted", "admitted", "local"],
  );
  await meterProvider.shutdown();
  await tracerProvider.shutdown();
});

Deno.test("acquire() with a concurrency limit during an outage holds at most floor(share × max) local slots, and the stored slots are untouched", async () => {
  await using s = await setup();
  const inflight = Limit.concurrent("inflight", 30, { leaseMs: 60_000 });
  const call = {
    entityId: "a",
    resource: "gpt",
    consume: { rpm: 1 },
    concurrency: [inflight],
  };
  await s.limiter.acquire(call, () => {}); // a stored slot, freed again
  s.fc.faults.inject({
    fault: { kind: "beforeApply", error: "InternalServerError" },
  });
  const results = await Promise.allSettled(
    Array.from({ length: 8 }, () => s.limiter.acquire(call)),
  );
  const held = results.flatMap((r) =>
    r.status === "fulfilled" ? [r.value] : []
  );
  assert.equal(held.length, 3); // floor(0.1 × 30)
  assert.ok(held.every((l) => l.local));
  for (const r of results) {
    if (r.status === "rejected") {
      assert.equal((r.reason as Error).name, "RateLimitExceeded");
    }
  }
  await (held[0] as Lease).rollback();
  await s.limiter.acquire(call, (l) => assert.equal(l.local, true));
  s.fc.faults.clear();
  await delay(300);
  for (const l of held.slice(1)) await l.commit(); // no-ops on DynamoDB
  // Back on DynamoDB: the stored slots never saw the local holders.
  const stored: Lease[] = [];
  for (let i = 0; i < 5; i++) stored.push(await s.limiter.acquire(call));
  assert.ok(stored.every((l) => !l.local));
  const ns = /^(.*)\/BUCKET#/.exec(s.env.repo.bucketPk("a", "gpt"))?.[1];
  const item = (await s.env.client.send(
    new GetItemCommand({
      TableName: s.env.repo.tableName,
      Key: {
        PK: { S: `${ns}/CONCURRENCY#a#gpt` },
        SK: { S: "#SLOTS#inflight" },
      },
      ConsistentRead: true,
    }),
  )).Item ?? {};
  const live = Object.entries(item).filter(([k, v]) =>
    /^cs_\d+$/.test(k) && Number(v.N) > Date.now()
  );
  assert.equal(live.length, 5);
  for (const l of stored) await l.commit();
});

Deno.test("acquire() with localFallback when the bucket endpoint turns into a real TCP black hole (silentEndpoint): local share only, then DynamoDB again", async () => {
  await using env = await freshRepo();
  await env.repo.setSystemDefaults([RPM, TPM]);
  await env.repo.createEntity("org");
  await env.repo.createEntity("a", { parentId: "org", cascade: true });
  await using hole = silentEndpoint();
  using dead = await faultyClient({
    endpoint: hole.endpoint,
    maxAttempts: 1,
  });
  // The bucket and slot items go through a client this test can point at
  // the black hole (a network partition); limits still come from the repository.
  let current: DynamoDBClient = env.client;
  const table = createTableClient({
    send: (command: unknown) => {
      const signal = currentSignal();
      return current.send(
        command as Parameters<DynamoDBClient["send"]>[0],
        signal ? { abortSignal: signal } : {},
      );
    },
  }, { tableName: env.repo.tableName, clock: env.repo.clock });
  const contexts: string[] = [];
  const limiter = new RateLimiter(env.repo, {
    bucketStore: new DynamoBucketStore(table),
    slotStore: new DynamoSlotStore(table),
    timeoutMs: 1000,
    localFallback: { share: SHARE, probeIntervalMs: 250 },
    onError: (_e, context) => contexts.push(context),
  });
  const call = { entityId: "a", resource: "gpt", consume: { rpm: 1 } };
  await limiter.acquire(call, () => {});
  await (await limiter.acquire(call)).rollback();
  current = dead.client;
  const started = Date.now();
  let admitted = 0;
  for (let i = 0; i < 25; i++) {
    await limiter.acquire(call, (l) => {
      assert.equal(l.local, true);
      admitted++;
    }).catch((e) => assert.equal(e.name, "RateLimitExceeded"));
  }
  const elapsed = Date.now() - started;
  assert.ok(hole.connections > 0, "the black hole was reached");
  assert.ok(contexts.includes("local"));
  assert.ok(
    admitted >= 10 && admitted <= bound(RPM, 1, elapsed),
    `${admitted}`,
  );
  current = env.client;
  // Back: within a few probe intervals an acquire is decided by DynamoDB again.
  let remote = false;
  for (let i = 0; i < 20 && !remote; i++) {
    await delay(300);
    await limiter.acquire(call, (l) => {
      remote = !l.local;
    }).catch(() => {});
  }
  assert.ok(remote, "DynamoDB is used again");
});
