import assert from "node:assert/strict";
import type { DataPoint, Histogram } from "@opentelemetry/sdk-metrics";
import { Limit, RateLimiter, RateLimitExceeded } from "../../mod.ts";
import { inMemoryTelemetry } from "./_telemetry.ts";
import { freshRepo, manualClock } from "./_harness.ts";

Deno.test("acquire() reports decisions, latency, DynamoDB calls and spans to OpenTelemetry", async () => {
  const clock = manualClock();
  await using env = await freshRepo({ clock });
  await env.repo.setSystemDefaults([Limit.perHour("rph", 3)]);
  const { exporter, reader, meterProvider, spans, tracerProvider } =
    inMemoryTelemetry();
  const limiter = new RateLimiter(env.repo, {
    telemetry: { meterProvider, tracerProvider },
    onError: () => {},
  });
  const req = { entityId: "key-1", resource: "api", consume: { rph: 1 } };
  let refused = 0;
  for (let i = 0; i < 5; i++) {
    await limiter.acquire(req, () => {}).catch((e) => {
      assert.ok(e instanceof RateLimitExceeded);
      refused++;
    });
  }
  assert.equal(refused, 2);
  const gone = AbortSignal.abort(new Error("down"));
  const other = { ...req, entityId: "key-2", signal: gone };
  await limiter.acquire({ ...other, onUnavailable: "allow" });
  await limiter.acquire({ ...other, onUnavailable: "allow" });
  await assert.rejects(
    limiter.acquire({ ...other, onUnavailable: "block" }),
  );

  await reader.forceFlush();
  const metrics =
    exporter.getMetrics().at(-1)?.scopeMetrics.find((s) =>
      s.scope.name === "zae-limiter"
    )?.metrics ?? [];
  const byName = new Map(metrics.map((m) => [m.descriptor.name, m]));
  const decisions = byName.get("zae_limiter.decisions");
  assert.ok(decisions, "decision counter exported");
  const counts = Object.fromEntries(
    decisions.dataPoints.map((
      p,
    ) => [String(p.attributes["zae_limiter.outcome"]), p.value]),
  );
  assert.deepEqual(counts, {
    admitted: 3,
    refused: 2,
    failed_open: 2,
    error: 1,
  });
  for (const p of decisions.dataPoints) {
    assert.equal(p.attributes["zae_limiter.limit"], "rph");
    assert.equal(p.attributes["zae_limiter.resource"], "api");
    assert.equal(p.attributes["zae_limiter.namespace"], "default");
    assert.equal(p.attributes["zae_limiter.entity_id"], undefined);
  }
  const latency = byName.get("zae_limiter.decision.duration")
    ?.dataPoints as DataPoint<Histogram>[] | undefined;
  assert.equal(latency?.[0]?.value.count, 8);
  assert.equal(latency?.[0]?.value.min !== undefined, true);
  const calls = byName.get("zae_limiter.decision.dynamodb_calls")
    ?.dataPoints as DataPoint<Histogram>[] | undefined;
  assert.equal(calls?.[0]?.value.count, 8);

  const finished = spans.getFinishedSpans();
  assert.equal(finished.length, 8);
  const attrs = finished.map((s) => s.attributes);
  // Cold first acquire: slow path; the next two are warm, one call each.
  assert.equal(attrs[0]?.["zae_limiter.path"], "slow");
  for (const a of attrs.slice(1, 3)) {
    assert.equal(a["zae_limiter.path"], "warm");
    assert.equal(a["zae_limiter.dynamodb_calls"], 1);
    assert.equal(a["zae_limiter.outcome"], "admitted");
  }
  // The second refusal comes from the refusal cache without a call.
  assert.equal(attrs[4]?.["zae_limiter.path"], "cached");
  assert.equal(attrs[4]?.["zae_limiter.dynamodb_calls"], 0);
  assert.deepEqual(attrs.slice(5).map((a) => a["zae_limiter.outcome"]), [
    "failed_open",
    "failed_open",
    "error",
  ]);
  assert.equal(finished[7]?.status.code, 2); // SpanStatusCode.ERROR
  await meterProvider.shutdown();
  await tracerProvider.shutdown();
});

Deno.test("without an OpenTelemetry SDK the limiter records nothing and stays one call per warm acquire", async () => {
  const clock = manualClock();
  await using env = await freshRepo({ clock });
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 1000)]);
  const limiter = new RateLimiter(env.repo);
  const req = { entityId: "key-1", resource: "api", consume: { rpm: 1 } };
  await limiter.acquire(req, () => {});
  env.calls.reset();
  await limiter.acquire(req, () => {});
  assert.equal(env.calls.total(), 1);
});
