import assert from "node:assert/strict";
import { Limit, RateLimiterUnavailable, RateLimitExceeded } from "../mod.ts";
import { createTestLimiter } from "../testing.ts";

/** A write that applied but whose answer was lost (ambiguous: the charge may stand). */
const answerLost = (): Error =>
  Object.assign(new Error("injected: answer lost after apply"), {
    name: "InternalServerError",
  });

Deno.test("a throwing onStranded or onError never replaces the library's answer nor escapes as an unhandled rejection", async () => {
  let loseAnswer = false;
  const seen: string[] = [];
  const { limiter, source, store } = createTestLimiter({
    store: {
      hook: (phase, op) => {
        if (phase === "after" && op !== "read" && loseAnswer) {
          loseAnswer = false;
          throw answerLost();
        }
      },
    },
    limiter: {
      onError: (_e, context) => {
        seen.push(`onError:${context}`);
        throw new Error("the user's logger failed");
      },
      onStranded: (c) => {
        seen.push(`onStranded:${c.kind}`);
        throw new Error("the user's stranded hook failed");
      },
    },
  });
  source.setSystemDefaults([Limit.perMinute("rpm", 100)]);
  const req = { entityId: "k", resource: "api", consume: { rpm: 1 } };
  await (await limiter.acquire(req)).commit();
  // A write applies but its answer is lost: the charge is stranded.
  loseAnswer = true;
  await assert.rejects(
    limiter.acquire({ ...req, onUnavailable: "block" }),
    RateLimiterUnavailable,
    "the library's answer, not the user's callback's error",
  );
  assert.ok(seen.includes("onStranded:debit"), seen.join(","));
  // The hook's failure went to onError (which threw too, and was contained).
  assert.ok(seen.includes("onError:onStranded"), seen.join(","));
  // The limiter still works.
  await (await limiter.acquire(req)).commit();
  await limiter.close();
  const item = store.get({
    ns: "default",
    entityId: "k",
    resource: "api",
    shard: 0,
  });
  assert.equal(item?.limits.get("rpm")?.tc, 3000n, "1 + 1 stranded + 1");
});

Deno.test("a throwing onStranded called from a background give-back (a retired local-reserve slice) is contained", async () => {
  let failGiveBacks = false;
  const seen: string[] = [];
  const { limiter, source } = createTestLimiter({
    store: {
      hook: (phase, _op, ws) => {
        if (phase !== "after" || !failGiveBacks) return;
        const giveBack = ws.some((w) =>
          w.kind === "plain" && w.write.limits.some((l) => l.take < 0n)
        );
        if (giveBack) {
          throw answerLost();
        }
      },
    },
    limiter: {
      refusalCacheSize: 0,
      onError: (_e, context) => void seen.push(`onError:${context}`),
      onStranded: (c) => {
        seen.push(`onStranded:${c.kind}`);
        throw new Error("the user's stranded hook failed");
      },
      localReserve: { ttlMs: 20, targetMs: 5000, maxFraction: 0.5, env: {} },
    },
  });
  source.setSystemDefaults([Limit.perMinute("rpm", 6000)]);
  const req = { entityId: "k", resource: "api", consume: { rpm: 1 } };
  // Demand until a slice holds tokens this process has not used yet.
  for (let i = 0; i < 200; i++) {
    await (await limiter.acquire(req)).commit();
    if (Object.keys(limiter.reserveStats()?.heldTokens ?? {}).length) break;
  }
  assert.ok(limiter.reserveStats()?.heldTokens["rpm"], "a slice is held");
  failGiveBacks = true;
  // The slices expire and their give-backs fail in the background.
  await new Promise((r) => setTimeout(r, 200));
  await limiter.close();
  assert.ok(seen.includes("onStranded:giveback"), seen.join(","));
  assert.ok(seen.includes("onError:onStranded"), seen.join(","));
});

Deno.test("a meter or tracer that throws while recording a decision never loses a granted lease nor replaces a refusal", async () => {
  const boom = (): never => {
    throw new Error("injected: exporter down");
  };
  const meter = {
    createCounter: () => ({ add: boom }),
    createHistogram: () => ({ record: boom }),
  };
  const span = {
    setAttribute: boom,
    setAttributes: boom,
    setStatus: boom,
    recordException: boom,
    end: boom,
  };
  const tracer = { startSpan: () => span };
  const errors: string[] = [];
  const { limiter, source } = createTestLimiter({
    limiter: {
      telemetry: {
        meterProvider: { getMeter: () => meter } as never,
        tracerProvider: { getTracer: () => tracer } as never,
      },
      onError: (_e, context) => void errors.push(context),
    },
  });
  source.setSystemDefaults([Limit.perMinute("rpm", 2)]);
  const req = {
    entityId: "k",
    resource: "api",
    consume: { rpm: 1 },
    concurrency: [Limit.concurrent("inflight", 1, { leaseMs: 60_000 })],
  };
  // Admitted: the caller gets the lease (its slot and charge) despite the instruments.
  let ran = 0;
  assert.equal(await limiter.acquire(req, () => ++ran), 1);
  // The slot was freed by the commit: the next acquire gets it.
  const lease = await limiter.acquire(req);
  await lease.commit();
  // Refused: still a RateLimitExceeded.
  await assert.rejects(limiter.acquire(req), RateLimitExceeded);
  assert.ok(errors.includes("telemetry"), errors.join(","));
  await limiter.close();
});
