import assert from "node:assert/strict";
import { Limit } from "./limit.ts";
import { LocalFallback, resolveLocalFallback } from "./local_fallback.ts";
import { createTestLimiter } from "../testing.ts";

function manual(start = 1_900_000_000_000) {
  let now = start;
  return {
    now: () => now,
    sleep: () => Promise.resolve(),
    advance(ms: number) {
      now += ms;
    },
  };
}

/** A store that fails every call with a throttling error while `down`. */
function setup(share = 0.1, probeIntervalMs = 1000) {
  const clock = manual();
  const net = { down: false, calls: 0 };
  const errors: string[] = [];
  const t = createTestLimiter({
    source: { clock },
    store: {
      hook: (phase) => {
        if (phase !== "before") return;
        net.calls++;
        if (net.down) {
          const e = new Error(
            "Rate of requests exceeds the allowed throughput",
          );
          e.name = "ThrottlingException";
          throw e;
        }
      },
    },
    limiter: {
      localFallback: { share, probeIntervalMs },
      onError: (_e, context) => errors.push(context),
    },
  });
  t.source.setSystemDefaults([
    Limit.perMinute("rpm", 100),
    Limit.perMinute("tpm", 10_000),
  ]);
  return { ...t, clock, net, errors };
}

const ONE = { entityId: "k", resource: "api", consume: { rpm: 1 } };

Deno.test("resolveLocalFallback() refuses a share outside (0, 1]", () => {
  assert.equal(resolveLocalFallback({ share: 0.5 }).probeIntervalMs, 1000);
  for (const share of [0, -0.1, 1.5, NaN]) {
    assert.throws(() => resolveLocalFallback({ share }), {
      name: "ValidationError",
    });
  }
  assert.throws(
    () => createTestLimiter({ limiter: { localFallback: { share: 2 } } }),
    {
      name: "ValidationError",
    },
  );
});

Deno.test("LocalFallback.admit() takes all or nothing across sides and gives back once", () => {
  const clock = manual();
  const local = new LocalFallback({ share: 0.5 }, clock);
  const sides = [
    { entityId: "child", limits: [Limit.perMinute("rpm", 10)] },
    { entityId: "parent", limits: [Limit.perMinute("rpm", 4)] },
  ];
  const charge = new Map([["rpm", 1000n]]);
  const give = local.admit(sides, "api", charge);
  local.admit(sides, "api", charge);
  // The parent's local share (2) is spent: the child's is not touched.
  assert.throws(() => local.admit(sides, "api", charge), {
    name: "RateLimitExceeded",
  });
  local.admit([sides[0] as typeof sides[0]], "api", charge);
  give();
  give(); // once only
  local.admit(sides, "api", charge);
  assert.throws(() => local.admit(sides, "api", charge), {
    name: "RateLimitExceeded",
  });
  // The parent refills at 0.5 × 4 per minute: one token in 30 s.
  clock.advance(30_000);
  local.admit(sides, "api", charge);
});

Deno.test("acquire() with localFallback admits a share of each limit while the store fails, and reports it", async () => {
  const t = setup(0.1);
  // Learns the limits and the entity's cascade link (a new bucket shows it on the second acquire).
  await t.limiter.acquire(ONE, () => {});
  await (await t.limiter.acquire(ONE)).rollback();
  t.net.down = true;
  const leases = [];
  for (let i = 0; i < 10; i++) leases.push(await t.limiter.acquire(ONE));
  assert.ok(leases.every((l) => l.local && l.unchecked));
  await assert.rejects(t.limiter.acquire(ONE), { name: "RateLimitExceeded" });
  assert.deepEqual(t.errors, ["local"]); // one failure; the rest skipped the store
  // A rollback gives back to the local bucket only.
  await (leases[0] as (typeof leases)[0]).rollback();
  const again = await t.limiter.acquire(ONE);
  assert.equal(again.local, true);
  await again.commit();
  // The store is back: after probeIntervalMs the next acquire uses it.
  t.net.down = false;
  t.clock.advance(1000);
  const remote = await t.limiter.acquire(ONE);
  assert.equal(remote.local, false);
  await remote.commit();
  const left = await t.limiter.available({ entityId: "k", resource: "api" });
  // Only what reached the store is counted there: 3 charged, 1 given back.
  assert.ok((left.rpm ?? 0) >= 98, JSON.stringify(left));
  assert.equal(
    t.store.get({ ns: "default", entityId: "k", resource: "api", shard: 0 })
      ?.limits.get("rpm")?.tc,
    2000n,
  );
});

Deno.test("acquire() with onUnavailable 'local' fails as block when the entity's limits are unknown to the process", async () => {
  const t = setup();
  t.net.down = true;
  await assert.rejects(t.limiter.acquire({ ...ONE, entityId: "never-seen" }), {
    name: "RateLimiterUnavailable",
  });
  // A call's own onUnavailable wins over the limiter's local default.
  await assert.rejects(
    t.limiter.acquire({ ...ONE, onUnavailable: "block" }),
    { name: "RateLimiterUnavailable" },
  );
});

Deno.test("acquire() refuses onUnavailable 'local' on a limiter without localFallback", async () => {
  const t = createTestLimiter();
  t.source.setSystemDefaults([Limit.perMinute("rpm", 1)]);
  await assert.rejects(
    t.limiter.acquire({ ...ONE, onUnavailable: "local" }),
    { name: "ValidationError" },
  );
});

Deno.test("acquire() with concurrency limits under the local fallback holds floor(share × max) local slots, freed at lease end or leaseMs", async () => {
  const t = setup(0.1);
  const inflight = Limit.concurrent("inflight", 25, { leaseMs: 5000 });
  const call = { ...ONE, concurrency: [inflight] };
  await t.limiter.acquire(call, () => {});
  await (await t.limiter.acquire(call)).rollback();
  t.net.down = true;
  const a = await t.limiter.acquire(call);
  const b = await t.limiter.acquire(call); // 2 = floor(0.1 × 25)
  assert.ok(a.local && b.local);
  assert.equal(a.deadline, t.clock.now() + 5000);
  const e = await t.limiter.acquire(call).catch((x) => x);
  assert.equal(e.name, "RateLimitExceeded");
  assert.equal(e.violations[0].limitName, "inflight");
  await a.commit(); // frees a local slot
  const c = await t.limiter.acquire(call);
  // b and c never end: their local slots come back after leaseMs.
  await assert.rejects(t.limiter.acquire(call), { name: "RateLimitExceeded" });
  t.clock.advance(5000);
  await t.limiter.acquire(call, () => {});
  assert.equal(c.state, "expired");
  // A rate-limit refusal frees the local slot it took. Local rpm left: 10 − 4
  // taken + 0.83 refilled in 5 s = 6.83, so 6 more pass, 14 are refused by rpm.
  let admitted = 0;
  for (let i = 0; i < 20; i++) {
    await t.limiter.acquire(call, () => {
      admitted++;
    }).catch((x) => assert.equal(x.violations[0].limitName, "rpm"));
  }
  assert.equal(admitted, 6);
  const both = [
    await t.limiter.acquire({ ...call, consume: {} }),
    await t.limiter.acquire({ ...call, consume: {} }),
  ];
  assert.ok(both.every((l) => l.local));
  for (const l of both) await l.rollback();
});

Deno.test("acquire() aborted by its own signal is decided locally but does not make the next acquires skip DynamoDB", async () => {
  const t = setup(0.1, 60_000);
  await t.limiter.acquire(ONE, () => {});
  await (await t.limiter.acquire(ONE)).rollback();
  const aborted = await t.limiter.acquire({
    ...ONE,
    signal: AbortSignal.abort(new Error("client went away")),
  });
  assert.equal(aborted.local, true);
  await aborted.rollback();
  const next = await t.limiter.acquire(ONE);
  assert.equal(next.local, false); // no 60 s skip window after a caller's abort
  await next.commit();
});

Deno.test("the local fallback never refuses on a shadow limit, stored or per call (#14)", async () => {
  const t = setup(0.1);
  t.source.setSystemDefaults([
    Limit.perMinute("rpm", 100),
    Limit.perMinute("spm", 10).withShadow(),
    Limit.perMinute("tpm", 10_000),
  ]);
  // Learns the limits and the entity's cascade link.
  await t.limiter.acquire(ONE, () => {});
  await (await t.limiter.acquire(ONE)).rollback();
  t.net.down = true;
  const ask = {
    ...ONE,
    consume: { rpm: 1, spm: 5, tpm: 5_000 }, // both over their local share
    shadow: ["tpm"],
  };
  for (let i = 0; i < 3; i++) {
    const lease = await t.limiter.acquire(ask);
    assert.equal(lease.local, true);
    await lease.commit();
  }
  // The enforced limit still refuses locally at its share (10 of 100).
  let refused = 0;
  for (let i = 0; i < 10; i++) {
    await t.limiter.acquire(ask, () => {}).catch(() => refused++);
  }
  assert.ok(refused > 0);
});
