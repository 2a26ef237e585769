/**
 * Shadow mode (issue 14) on DynamoDB Local: shadow limits are decided and
 * reported, never refuse and are never charged; enforced limits keep all or
 * nothing, with cascade and rollback; the warm path stays one call.
 */
import assert from "node:assert/strict";
import { GetItemCommand } from "@aws-sdk/client-dynamodb";
import { Limit, RateLimiter, RateLimitExceeded } from "../../mod.ts";
import { inMemoryTelemetry } from "./_telemetry.ts";
import { freshRepo, manualClock } from "./_harness.ts";

type Env = Awaited<ReturnType<typeof freshRepo>>;

/** The stored `b_{name}_tk` and `_tc` of an entity's bucket, in millitokens. */
async function stored(
  env: Env,
  entityId: string,
  resource: string,
  name: string,
): Promise<{ tk: number; tc: number } | null> {
  const r = await env.client.send(
    new GetItemCommand({
      TableName: env.repo.tableName,
      Key: {
        PK: { S: env.repo.bucketPk(entityId, resource) },
        SK: { S: "#STATE" },
      },
      ConsistentRead: true,
    }),
  );
  const tk = r.Item?.[`b_${name}_tk`]?.N;
  const tc = r.Item?.[`b_${name}_tc`]?.N;
  return tk === undefined ? null : { tk: Number(tk), tc: Number(tc ?? 0) };
}

Deno.test("acquire({ shadow }) admits what the shadow limit would refuse, charges it nothing, and stays one call warm", async () => {
  const clock = manualClock();
  await using env = await freshRepo({ clock });
  await env.repo.setSystemDefaults([
    Limit.perMinute("rpm", 100),
    Limit.perMinute("tpm", 1000),
  ]);
  const limiter = new RateLimiter(env.repo);
  const ask = { entityId: "k", resource: "api" };
  // Enforced traffic leaves 200 tpm.
  await limiter.acquire({ ...ask, consume: { rpm: 1, tpm: 800 } }, () => {});
  const before = await stored(env, "k", "api", "tpm");
  assert.deepEqual(before, { tk: 200_000, tc: 800_000 });

  env.calls.reset();
  const lease = await limiter.acquire({
    ...ask,
    consume: { rpm: 1, tpm: 500 },
    shadow: ["tpm"],
  });
  assert.deepEqual(Object.fromEntries(env.calls.counts), {
    UpdateItemCommand: 1,
  });
  assert.deepEqual(
    lease.shadow.refused.map((s) => [s.limitName, s.available]),
    [
      ["tpm", 200],
    ],
  );
  assert.equal(lease.shadow.refused[0]?.requested, 500);
  assert.ok((lease.shadow.refused[0]?.retryAfterSeconds ?? 0) > 0);
  // The lease ignores the shadow limit: an adjustment of it charges nothing.
  await lease.adjust({ tpm: 300 });
  await lease.commit();
  assert.deepEqual(await stored(env, "k", "api", "tpm"), before);
  assert.deepEqual(await stored(env, "k", "api", "rpm"), {
    tk: 98_000,
    tc: 2_000,
  });

  // A shadow decision that fits is reported as checked, not refused; with
  // every name shadowed and the item known, the acquire makes no call.
  env.calls.reset();
  const fits = await limiter.acquire({
    ...ask,
    consume: { rpm: 1, tpm: 100 },
    shadow: true,
  });
  assert.deepEqual(fits.shadow.checked.map((s) => s.limitName).sort(), [
    "rpm",
    "tpm",
  ]);
  assert.equal(fits.shadow.refused.length, 0);
  await fits.commit();
  assert.equal(env.calls.total(), 0);
  // Everything shadowed: nothing written at all.
  assert.deepEqual(await stored(env, "k", "api", "rpm"), {
    tk: 98_000,
    tc: 2_000,
  });
  // The enforced limit still refuses, all or nothing.
  await assert.rejects(
    limiter.acquire({ ...ask, consume: { rpm: 1, tpm: 300 }, shadow: ["rpm"] }),
    RateLimitExceeded,
  );
  assert.deepEqual(await stored(env, "k", "api", "rpm"), {
    tk: 98_000,
    tc: 2_000,
  });
  await assert.rejects(
    limiter.acquire({ ...ask, consume: { rpm: 1 }, shadow: ["nope"] }),
    { name: "ValidationError", field: "shadow" },
  );
});

Deno.test("a stored shadow limit is written as l_{name}_sh, audited, never refuses and is never charged", async () => {
  const clock = manualClock();
  await using env = await freshRepo({ clock });
  await env.repo.setSystemDefaults([
    Limit.perMinute("rpm", 100),
    Limit.perMinute("tpm", 1000).withShadow(),
  ]);
  const config = await env.client.send(
    new GetItemCommand({
      TableName: env.repo.tableName,
      Key: {
        PK: { S: `${env.repo.namespaceId}/SYSTEM#` },
        SK: { S: "#CONFIG" },
      },
    }),
  );
  assert.deepEqual(config.Item?.["l_tpm_sh"], { N: "1" });
  assert.deepEqual(config.Item?.["l_rpm_sh"], undefined);
  const [event] = await env.repo.getAuditEvents("$SYSTEM");
  assert.deepEqual(
    (event?.details["limits"] as { name: string; shadow?: boolean }[])
      .map((l) => [l.name, l.shadow ?? false]),
    [["rpm", false], ["tpm", true]],
  );
  const limiter = new RateLimiter(env.repo);
  const ask = { entityId: "k", resource: "api" };
  for (let i = 0; i < 3; i++) {
    // 1500 > the capacity: an enforced limit would refuse before any write.
    const lease = await limiter.acquire({
      ...ask,
      consume: { rpm: 1, tpm: 1500 },
    });
    assert.deepEqual(lease.shadow.refused.map((s) => s.limitName), ["tpm"]);
    assert.deepEqual(lease.consumed, { rpm: 1 });
    await lease.commit();
  }
  // Never charged, a stored shadow limit is not written to the bucket at all.
  assert.equal(await stored(env, "k", "api", "tpm"), null);
  assert.equal((await stored(env, "k", "api", "rpm"))?.tc, 3_000);
});

Deno.test("shadow with cascade: a parent's shadow limit never blocks, the parent's enforced one keeps all or nothing, rollback gives back only what was charged", async () => {
  const clock = manualClock();
  await using env = await freshRepo({ clock });
  await env.repo.createEntity("org", {});
  await env.repo.createEntity("user", { parentId: "org", cascade: true });
  await env.repo.setLimits("user", [
    Limit.perMinute("rpm", 100),
    Limit.perMinute("tpm", 10_000),
  ]);
  await env.repo.setLimits("org", [
    Limit.perMinute("rpm", 3),
    Limit.perMinute("tpm", 100).withShadow(),
  ]);
  const limiter = new RateLimiter(env.repo);
  const ask = { entityId: "user", resource: "api" };
  for (let i = 0; i < 3; i++) {
    const lease = await limiter.acquire({
      ...ask,
      consume: { rpm: 1, tpm: 400 },
    });
    // The org's tpm (capacity 100) would refuse 400: reported, not enforced.
    assert.deepEqual(
      lease.shadow.refused.map((s) => [s.entityId, s.limitName]),
      [["org", "tpm"]],
    );
    if (i === 2) await lease.rollback();
    else await lease.commit();
  }
  assert.equal(await stored(env, "org", "api", "tpm"), null);
  // Two committed, one rolled back, on both sides.
  assert.equal((await stored(env, "user", "api", "tpm"))?.tc, 800_000);
  assert.equal((await stored(env, "org", "api", "rpm"))?.tc, 2_000);
  // The org's enforced rpm refuses the 2nd next call: the user is charged nothing.
  await limiter.acquire({ ...ask, consume: { rpm: 1, tpm: 1 } }, () => {});
  await assert.rejects(
    limiter.acquire({ ...ask, consume: { rpm: 1, tpm: 1 } }),
    RateLimitExceeded,
  );
  assert.equal((await stored(env, "user", "api", "rpm"))?.tc, 3_000);
  // Shadowing the org's enforced limit per call lets it through, uncharged.
  const lease = await limiter.acquire({
    ...ask,
    consume: { rpm: 1, tpm: 1 },
    shadow: ["rpm"],
  });
  assert.deepEqual(
    lease.shadow.refused.map((s) => [s.entityId, s.limitName]),
    [["org", "rpm"]],
  );
  await lease.commit();
  assert.equal((await stored(env, "org", "api", "rpm"))?.tc, 3_000);
  assert.equal((await stored(env, "user", "api", "rpm"))?.tc, 3_000);
});

Deno.test("shadow decisions are counted in zae_limiter.shadow.decisions and marked on the span", async () => {
  const clock = manualClock();
  await using env = await freshRepo({ clock });
  await env.repo.setSystemDefaults([
    Limit.perMinute("rpm", 100),
    Limit.perMinute("tpm", 100).withShadow(),
  ]);
  const { exporter, reader, meterProvider, spans, tracerProvider } =
    inMemoryTelemetry();
  const limiter = new RateLimiter(env.repo, {
    telemetry: { meterProvider, tracerProvider },
  });
  const ask = { entityId: "k", resource: "api" };
  await limiter.acquire({ ...ask, consume: { rpm: 1, tpm: 50 } }, () => {});
  await limiter.acquire({ ...ask, consume: { rpm: 1, tpm: 500 } }, () => {});
  await limiter.acquire({ ...ask, consume: { rpm: 1, tpm: 600 } }, () => {});
  await reader.forceFlush();
  const metric = exporter.getMetrics().at(-1)?.scopeMetrics
    .find((s) => s.scope.name === "zae-limiter")?.metrics
    .find((m) => m.descriptor.name === "zae_limiter.shadow.decisions");
  assert.ok(metric, "shadow counter exported");
  const counts = Object.fromEntries(
    metric.dataPoints.map((p) => [
      `${p.attributes["zae_limiter.limit"]}:${
        p.attributes["zae_limiter.outcome"]
      }`,
      p.value,
    ]),
  );
  assert.deepEqual(counts, { "tpm:would_admit": 1, "tpm:would_refuse": 2 });
  const marked = spans.getFinishedSpans().map((s) =>
    s.attributes["zae_limiter.shadow_refused"] ?? null
  );
  assert.deepEqual(marked, [null, "tpm", "tpm"]);
  await meterProvider.shutdown();
  await tracerProvider.shutdown();
});
