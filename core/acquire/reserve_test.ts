import assert from "node:assert/strict";
import {
  Limit,
  RateLimitExceeded,
  type SliceEvent,
  ValidationError,
} from "../../mod.ts";
import { type BucketWrite, createTestLimiter } from "../../testing.ts";
import type { RateLimiterOptions } from "../limiter.ts";
import { resolveReserveConfig, shortLivedRuntime } from "./reserve_config.ts";

const REF = { ns: "default", entityId: "k", resource: "api", shard: 0 };

function setup(
  reserve: RateLimiterOptions["localReserve"],
  limits?: Limit[],
  hook?: (phase: string, op: string, ws: readonly BucketWrite[]) => void,
) {
  let writes = 0;
  const events: SliceEvent[] = [];
  const errors: string[] = [];
  const stranded: unknown[] = [];
  const { limiter, source, store } = createTestLimiter({
    store: {
      hook: (phase, op, ws) => {
        if (phase === "before" && op !== "read") writes++;
        hook?.(phase, op, ws);
      },
    },
    limiter: {
      localReserve: typeof reserve === "object"
        ? { ...reserve, onSlice: (e) => events.push(e) }
        : reserve === true
        ? { onSlice: (e) => events.push(e) }
        : reserve ?? false,
      onError: (e, ctx) => errors.push(`${ctx}: ${String(e)}`),
      onStranded: (c) => stranded.push(c),
      refusalCacheSize: 0,
    },
  });
  source.setSystemDefaults(limits ?? [Limit.custom("rpm", 1000, 1000, 60)]);
  return {
    limiter,
    source,
    store,
    events,
    errors,
    stranded,
    writes: () => writes,
    tk: (name = "rpm", ref = REF) =>
      store.get(ref)?.limits.get(name)?.tk ?? null,
  };
}

const req = { entityId: "k", resource: "api", consume: { rpm: 1 } };

Deno.test("localReserve admits most acquires from memory once a bucket is busy", async () => {
  const t = setup({ ttlMs: 60_000 });
  try {
    for (let i = 0; i < 200; i++) await t.limiter.acquire(req, () => {});
    const s = t.limiter.reserveStats();
    assert.ok(s);
    assert.ok(s.localAdmissions >= 150, JSON.stringify(s));
    assert.ok(t.writes() <= 30, `${t.writes()} writes for 200 acquires`);
    // The stored balance is lower than 1000 - 200 by exactly what is held.
    const held = BigInt(Math.round((s.heldTokens["rpm"] ?? 0) * 1000));
    const tk = t.tk() as bigint;
    assert.ok(tk <= 800_000n - held + 5_000n, `tk ${tk}, held ${held}`);
    assert.ok(held <= 100_000n, "at most maxFraction (0.1) of capacity held");
  } finally {
    await t.limiter.close();
  }
});

Deno.test("RateLimiter.close() gives every unused slice back", async () => {
  const t = setup(true);
  for (let i = 0; i < 50; i++) await t.limiter.acquire(req, () => {});
  const held = t.limiter.reserveStats()?.heldTokens["rpm"] ?? 0;
  assert.ok(held > 0, "a slice is held");
  await t.limiter.close();
  const s = t.limiter.reserveStats();
  assert.deepEqual(s?.heldTokens, {});
  assert.equal(s?.returnedTokens["rpm"], held);
  assert.ok(t.events.some((e) => e.kind === "returned"));
  // 50 consumed in 60 s of 1000/min: the stored balance shows only those
  // (plus refill since), nothing held back.
  const tk = t.tk() as bigint;
  assert.ok(tk >= 950_000n && tk <= 952_000n, `tk ${tk}`);
  // Closed: later acquires go to DynamoDB.
  const before = t.writes();
  await t.limiter.acquire(req, () => {});
  assert.equal(t.writes(), before + 1);
});

Deno.test("localReserve gives a slice back when it expires", async () => {
  const t = setup({ ttlMs: 150 });
  try {
    for (let i = 0; i < 35; i++) await t.limiter.acquire(req, () => {});
    assert.ok((t.limiter.reserveStats()?.heldTokens["rpm"] ?? 0) > 0);
    const deadline = Date.now() + 5000;
    while (
      t.limiter.reserveStats()?.returnedTokens["rpm"] === undefined &&
      Date.now() < deadline
    ) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(t.limiter.reserveStats()?.heldTokens, {});
    const tk = t.tk() as bigint;
    assert.ok(tk >= 965_000n && tk <= 975_000n, `tk ${tk}`);
  } finally {
    await t.limiter.close();
  }
});

Deno.test("localReserve: a rollback returns to the slice, adjust up beyond it goes to the store", async () => {
  const t = setup({ ttlMs: 60_000 });
  try {
    for (let i = 0; i < 20; i++) await t.limiter.acquire(req, () => {});
    const held = t.limiter.reserveStats()?.heldTokens["rpm"] ?? 0;
    assert.ok(held >= 3, `held ${held}`);
    const writes = t.writes();
    await assert.rejects(
      t.limiter.acquire(req, () => {
        throw new Error("body");
      }),
      /body/,
    );
    assert.equal(t.writes(), writes, "served and rolled back in memory");
    assert.equal(t.limiter.reserveStats()?.heldTokens["rpm"], held);
    const tk = t.tk() as bigint;
    await t.limiter.acquire(req, (lease) => lease.adjust({ rpm: 500 }));
    assert.equal(
      t.writes(),
      writes + 1,
      "the adjust beyond the slice is written",
    );
    const after = t.tk() as bigint;
    assert.ok(after <= tk - 500_000n + 2_000n, `${tk} -> ${after}`);
  } finally {
    await t.limiter.close();
  }
});

Deno.test("localReserve: a limit not served sends the call to the store", async () => {
  const t = setup({ limits: ["rpm"], ttlMs: 60_000 }, [
    Limit.custom("rpm", 1000, 1000, 60),
    Limit.custom("tpm", 100_000, 100_000, 60),
  ]);
  try {
    for (let i = 0; i < 20; i++) {
      await t.limiter.acquire(
        { ...req, consume: { rpm: 1, tpm: 10 } },
        () => {},
      );
    }
    assert.equal(t.limiter.reserveStats()?.slicesTaken, 0);
    for (let i = 0; i < 20; i++) await t.limiter.acquire(req, () => {});
    assert.ok((t.limiter.reserveStats()?.localAdmissions ?? 0) > 5);
  } finally {
    await t.limiter.close();
  }
});

Deno.test("localReserve: cascade acquires are served only when child and parent are covered", async () => {
  const t = setup({ ttlMs: 60_000 });
  t.source.createEntity("parent");
  t.source.createEntity("child", { parentId: "parent", cascade: true });
  const creq = { entityId: "child", resource: "api", consume: { rpm: 1 } };
  const parentRef = { ...REF, entityId: "parent" };
  const childRef = { ...REF, entityId: "child" };
  try {
    for (let i = 0; i < 100; i++) await t.limiter.acquire(creq, () => {});
    const s = t.limiter.reserveStats();
    assert.ok((s?.localAdmissions ?? 0) >= 60, JSON.stringify(s));
    await t.limiter.close();
    // After close both buckets show exactly the 100 admitted (plus refill).
    for (const ref of [parentRef, childRef]) {
      const tk = t.tk("rpm", ref) as bigint;
      assert.ok(tk >= 900_000n && tk <= 903_000n, `${ref.entityId}: ${tk}`);
    }
  } finally {
    await t.limiter.close();
  }
});

Deno.test("localReserve never refuses from memory: a refusal is decided by the store", async () => {
  const t = setup({ ttlMs: 60_000 }, [Limit.custom("rpm", 40, 40, 600)]);
  try {
    let admitted = 0;
    let refused = 0;
    for (let i = 0; i < 60; i++) {
      try {
        await t.limiter.acquire(req, () => {});
        admitted++;
      } catch (e) {
        assert.ok(e instanceof RateLimitExceeded);
        refused++;
      }
    }
    // 40 in the bucket (plus a few tenths refilled); slices never add any.
    assert.equal(admitted, 40);
    assert.equal(refused, 20);
  } finally {
    await t.limiter.close();
  }
});

Deno.test("localReserve: a slice write that fails after applying is reported stranded, never admitted from", async () => {
  let fail = false;
  const t = setup({ ttlMs: 60_000 }, undefined, (phase, _op, ws) => {
    const takesSlice = ws.some((w) =>
      w.kind === "plain" && (w.write.limits[0]?.take ?? 0n) > 1000n
    );
    if (phase === "after" && fail && takesSlice) {
      throw Object.assign(new Error("answer lost"), {
        name: "InternalServerError",
      });
    }
  });
  try {
    // Warm: slices are taken, then used up exactly (1 + 3 + 7 + 15 = 26 on
    // top of the first two direct writes... whatever is held is kept).
    for (let i = 0; i < 10; i++) await t.limiter.acquire(req, () => {});
    const held = t.limiter.reserveStats()?.heldTokens["rpm"] ?? 0;
    // Use up what is held so the next call takes a slice.
    for (let i = 0; i < held; i++) await t.limiter.acquire(req, () => {});
    assert.deepEqual(t.limiter.reserveStats()?.heldTokens, {});
    const before = t.tk() as bigint;
    const taken = t.limiter.reserveStats()?.slicesTaken ?? 0;
    fail = true;
    await assert.rejects(t.limiter.acquire(req, () => {}));
    fail = false;
    const after = t.tk() as bigint;
    const s = t.limiter.reserveStats();
    assert.equal(s?.slicesTaken, taken, "no slice installed");
    assert.deepEqual(s?.heldTokens, {});
    const debit = t.stranded.at(-1) as {
      kind: string;
      amounts: Record<string, number>;
    };
    assert.equal(debit.kind, "debit");
    const charged = BigInt(Math.round((debit.amounts["rpm"] ?? 0) * 1000));
    assert.ok(charged > 1000n, `a slice was in the failed write: ${charged}`);
    assert.ok(before - after >= charged - 100n, `${before} -> ${after}`);
    assert.equal(s?.strandedTokens["rpm"], Number(charged) / 1000);
  } finally {
    await t.limiter.close();
  }
});

Deno.test("resolveReserveConfig is off on AWS Lambda unless allowShortLived, and checks its fields", () => {
  const notes: string[] = [];
  const lambda = { AWS_LAMBDA_FUNCTION_NAME: "fn" };
  assert.equal(
    resolveReserveConfig({ env: lambda }, (m) => notes.push(m)),
    null,
  );
  assert.match(notes[0] ?? "", /Lambda.*allowShortLived/);
  assert.ok(
    resolveReserveConfig({ env: lambda, allowShortLived: true }, () => {}),
  );
  assert.ok(resolveReserveConfig({ env: {} }, () => {}));
  assert.equal(resolveReserveConfig(false, () => {}), null);
  assert.equal(resolveReserveConfig(undefined, () => {}), null);
  assert.equal(
    shortLivedRuntime({ AWS_EXECUTION_ENV: "AWS_Lambda_nodejs22.x" }) !== null,
    true,
  );
  assert.equal(
    shortLivedRuntime({ AWS_EXECUTION_ENV: "AWS_ECS_FARGATE" }),
    null,
  );
  for (
    const bad of [{ maxFraction: 0 }, { maxFraction: 1.5 }, { ttlMs: -1 }, {
      targetMs: Number.NaN,
    }]
  ) {
    assert.throws(() => resolveReserveConfig({ ...bad, env: {} }, () => {}), {
      name: "ValidationError",
      code: "VALIDATION_FAILED",
    });
  }
  assert.ok(new ValidationError("x", 1, "y") instanceof Error);
});

Deno.test("RateLimiter turns the local reserve off on AWS Lambda with a note to onError", async () => {
  const notes: string[] = [];
  const { limiter, source } = createTestLimiter({
    limiter: {
      localReserve: { env: { AWS_LAMBDA_FUNCTION_NAME: "gateway" } },
      onError: (e, ctx) => notes.push(`${ctx}: ${(e as Error).message}`),
    },
  });
  source.setSystemDefaults([Limit.custom("rpm", 1000, 1000, 60)]);
  assert.equal(limiter.reserveStats(), null);
  assert.equal(notes.length, 1);
  assert.match(
    notes[0] ?? "",
    /^localReserve: Cannot use the local reserve on AWS Lambda/,
  );
  for (let i = 0; i < 20; i++) await limiter.acquire(req, () => {});
  await limiter.close(); // nothing to give back
});

Deno.test("localReserve: a release beyond what a lease got from its slice is a give-back DynamoDB caps", async () => {
  const t = setup({ ttlMs: 60_000 }, [Limit.custom("rpm", 100, 100, 3600)]);
  try {
    for (let i = 0; i < 12; i++) await t.limiter.acquire(req, () => {});
    const held = t.limiter.reserveStats()?.heldTokens["rpm"] ?? 0;
    assert.ok(held >= 2, `held ${held}`);
    const writes = t.writes();
    // 1 taken, 50 released: 49 more than the lease holds.
    await t.limiter.acquire(req, (lease) => lease.adjust({ rpm: -50 }));
    assert.equal(t.writes(), writes + 1, "the release went to the store");
    assert.equal(
      t.limiter.reserveStats()?.heldTokens["rpm"],
      held - 1,
      "the slice did not grow",
    );
    // The store capped the give-back at capacity: slices + store ≤ 100.
    const tk = t.tk() as bigint;
    assert.ok(tk <= 100_000n, `tk ${tk}`);
  } finally {
    await t.limiter.close();
  }
  const tk = t.tk() as bigint;
  assert.ok(tk <= 100_000n, `after close: tk ${tk}`);
});

Deno.test("localReserve retires a slice when its limits change, giving it back", async () => {
  const t = setup({ ttlMs: 60_000 });
  try {
    for (let i = 0; i < 33; i++) await t.limiter.acquire(req, () => {});
    const held = t.limiter.reserveStats()?.heldTokens["rpm"] ?? 0;
    assert.ok(held > 0, "a slice is held");
    t.source.setSystemDefaults([Limit.custom("rpm", 500, 500, 60)]);
    await t.limiter.acquire(req, () => {});
    // The old slice went back; nothing is admitted under the old limit.
    const deadline = Date.now() + 5000;
    while (
      (t.limiter.reserveStats()?.returnedTokens["rpm"] ?? 0) < held &&
      Date.now() < deadline
    ) await new Promise((r) => setTimeout(r, 10));
    assert.equal(t.limiter.reserveStats()?.returnedTokens["rpm"], held);
    const item = t.store.get(REF);
    assert.equal(item?.limits.get("rpm")?.params.cp, 500_000n);
  } finally {
    await t.limiter.close();
  }
});
