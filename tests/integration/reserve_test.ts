/**
 * The local reserve on DynamoDB Local with the real clock: several limiters
 * (separate SDK clients, repositories, caches and slices, like separate
 * processes) sharing buckets never over-admit (checked by the oracle on the
 * writes DynamoDB saw and on what callers saw); slices expire and are given
 * back; `close()` gives back; a slice write that fails after applying is
 * reported stranded and nothing is admitted from it; cascade and several
 * limits are served only when every limit is covered.
 */
import assert from "node:assert/strict";
import { Limit, Repository, type StrandedCharge } from "../../mod.ts";
import { check, format } from "../_oracle/checker.ts";
import { ReserveRecorder } from "../_oracle/reserve_recorder.ts";
import { faultyClient } from "./_faults.ts";
import { freshRepo } from "./_harness.ts";
import {
  reserveHistory,
  reserveLimiter,
  storedTk,
} from "./_reserve_history.ts";

async function sharedHistory(faults: boolean, seed: number): Promise<void> {
  const r = await reserveHistory({ faults, seed });
  assert.ok(r.store.ok, `store history: ${format(r.store)}`);
  assert.ok(r.caller.ok, `caller history: ${format(r.caller)}`);
  assert.ok(
    r.counts.admitted > 80,
    `${JSON.stringify(r.counts)} ${r.errors.join("; ")}`,
  );
  assert.ok(
    r.local > r.counts.admitted / 5,
    `${r.local} of ${JSON.stringify(r.counts)} served from slices`,
  );
  if (faults) assert.ok(r.lostAnswers > 0, "a fault was injected");
}

Deno.test("localReserve: limiters sharing buckets never over-admit, in DynamoDB or to callers", async () => {
  await sharedHistory(false, 7);
});

Deno.test("localReserve: limiters sharing buckets never over-admit with writes failing before and after they apply", async () => {
  await sharedHistory(true, 11);
});

Deno.test("localReserve: close() gives back, and an expired slice is given back", async () => {
  await using t = await freshRepo();
  await t.repo.setSystemDefaults([Limit.custom("rpm", 1000, 1000, 3600)]);
  const limiter = reserveLimiter(t.repo, {
    localReserve: { ttlMs: 60_000, env: {} },
  });
  const req = { entityId: "k", resource: "api", consume: { rpm: 1 } };
  for (let i = 0; i < 60; i++) await limiter.acquire(req, () => {});
  const held = limiter.reserveStats()?.heldTokens["rpm"] ?? 0;
  assert.ok(held > 0, "a slice is held");
  assert.ok(
    (await storedTk(t.repo, "k", "rpm")).tk <=
      940_000n - BigInt(held * 1000) + 2_000n,
  );
  await limiter.close();
  const after = await storedTk(t.repo, "k", "rpm");
  // 60 admitted of 1000 per hour: only those are gone (plus < 2 refilled).
  assert.ok(after.tk >= 940_000n && after.tk < 942_000n, `tk ${after.tk}`);
  assert.equal(after.tc, 60_000n);

  const short = reserveLimiter(t.repo, {
    localReserve: { ttlMs: 200, env: {} },
  });
  const req2 = { ...req, entityId: "k2" };
  for (let i = 0; i < 60; i++) await short.acquire(req2, () => {});
  assert.ok((short.reserveStats()?.heldTokens["rpm"] ?? 0) > 0);
  const deadline = Date.now() + 10_000;
  while (
    Object.keys(short.reserveStats()?.heldTokens ?? {}).length > 0 &&
    Date.now() < deadline
  ) await new Promise((r) => setTimeout(r, 50));
  // Given back without close(): what another process now sees.
  await new Promise((r) => setTimeout(r, 100));
  const k2 = await storedTk(t.repo, "k2", "rpm");
  assert.equal(k2.tc, 60_000n);
  await short.close();
});

Deno.test("localReserve: a slice write that fails after applying is reported stranded and nothing is admitted from it", async () => {
  await using t = await freshRepo();
  await t.repo.setSystemDefaults([Limit.custom("rpm", 1000, 1000, 3600)]);
  const fc = await faultyClient({ maxAttempts: 3 });
  const repo = await Repository.open({
    client: fc.client,
    stack: t.repo.tableName,
    namespace: t.repo.namespaceName,
  });
  const stranded: StrandedCharge[] = [];
  const limiter = reserveLimiter(repo, {
    localReserve: { ttlMs: 60_000, env: {} },
    onStranded: (c) => stranded.push(c),
  });
  const req = { entityId: "k", resource: "api", consume: { rpm: 1 } };
  try {
    // Warm until a slice is held, then use it up exactly.
    for (let i = 0; i < 10; i++) await limiter.acquire(req, () => {});
    const held = limiter.reserveStats()?.heldTokens["rpm"] ?? 0;
    for (let i = 0; i < held; i++) await limiter.acquire(req, () => {});
    assert.deepEqual(limiter.reserveStats()?.heldTokens, {});
    const before = await storedTk(t.repo, "k", "rpm");
    const taken = limiter.reserveStats()?.slicesTaken;
    fc.faults.inject({
      command: "UpdateItem",
      times: 1,
      fault: { kind: "afterApply", error: "InternalServerError" },
    });
    await assert.rejects(limiter.acquire(req, () => {}), {
      name: "RateLimiterUnavailable",
    });
    const after = await storedTk(t.repo, "k", "rpm");
    const debit = stranded.find((c) => c.kind === "debit");
    assert.ok(debit, "the slice write is reported stranded");
    const charged = BigInt(Math.round((debit.amounts["rpm"] ?? 0) * 1000));
    assert.ok(charged > 1000n, `the failed write carried a slice: ${charged}`);
    assert.equal(after.tc - before.tc, charged, "it did apply");
    assert.equal(limiter.reserveStats()?.slicesTaken, taken);
    assert.deepEqual(limiter.reserveStats()?.heldTokens, {});
    // Later acquires work and take a fresh slice from fresh state.
    for (let i = 0; i < 5; i++) await limiter.acquire(req, () => {});
  } finally {
    await limiter.close();
    fc[Symbol.dispose]();
  }
});

Deno.test("localReserve: a slice write that applies after its caller's deadline is given back, not reported stranded", async () => {
  await using t = await freshRepo();
  await t.repo.setSystemDefaults([Limit.custom("rpm", 1000, 1000, 3600)]);
  const fc = await faultyClient({ maxAttempts: 3 });
  const repo = await Repository.open({
    client: fc.client,
    stack: t.repo.tableName,
    namespace: t.repo.namespaceName,
  });
  const stranded: StrandedCharge[] = [];
  const limiter = reserveLimiter(repo, {
    localReserve: { ttlMs: 60_000, env: {} },
    onStranded: (c) => stranded.push(c),
  });
  const req = { entityId: "k", resource: "api", consume: { rpm: 1 } };
  try {
    // Warm until a slice is held, then use it up exactly.
    for (let i = 0; i < 10; i++) await limiter.acquire(req, () => {});
    const held = limiter.reserveStats()?.heldTokens["rpm"] ?? 0;
    for (let i = 0; i < held; i++) await limiter.acquire(req, () => {});
    assert.deepEqual(limiter.reserveStats()?.heldTokens, {});
    const before = await storedTk(t.repo, "k", "rpm");
    // The next slice write applies at once; its answer comes 400 ms later.
    fc.faults.inject({
      command: "UpdateItem",
      times: 1,
      fault: { kind: "delay", ms: 400, phase: "response" },
    });
    await assert.rejects(
      limiter.acquire({ ...req, timeoutMs: 150 }, () => {}),
      {
        name: "RateLimiterUnavailable",
      },
    );
    assert.equal(fc.faults.log[0]?.applied, true, "the slice write applied");
    await new Promise((r) => setTimeout(r, 1200)); // its answer, then the give-back
    const after = await storedTk(t.repo, "k", "rpm");
    assert.equal(after.tc, before.tc, "the slice applied late was given back");
    assert.deepEqual(stranded, []);
  } finally {
    await limiter.close();
    fc[Symbol.dispose]();
  }
});

// The soak's reserve lane once ended with the stored tc 1 token above what
// callers committed and reported (seed 1652886531, faults): a body failed,
// its rollback was throttled on every attempt (certainly not applied, so the
// lease stays open to be retried), and the callback form, which never hands
// the lease back, reported it only to onError. The token stayed charged,
// unreported.
Deno.test("a callback's rollback throttled on every attempt is reported stranded: the caller history's accounting holds", async () => {
  await using t = await freshRepo();
  await t.repo.setSystemDefaults([Limit.custom("rpm", 60, 60, 1)]);
  const fc = await faultyClient({ maxAttempts: 3 });
  const repo = await Repository.open({
    client: fc.client,
    stack: t.repo.tableName,
    namespace: t.repo.namespaceName,
  });
  const rec = new ReserveRecorder("rpm");
  const errors: string[] = [];
  const limiter = reserveLimiter(repo, {
    onStranded: rec.onStranded(),
    onError: (e, context) => errors.push(`${context}: ${String(e)}`),
  }, rec);
  const t0 = BigInt(Date.now());
  const call = {
    entityId: "solo",
    resource: "api",
    amount: 1,
    buckets: ["solo"],
  };
  try {
    for (let i = 0; i < 3; i++) await rec.acquire(0, limiter, call);
    // The next acquire's charge passes; its rollback's three attempts are throttled.
    let n = 0;
    const sent = fc.calls.attempts.get("UpdateItem") ?? 0;
    fc.faults.inject({
      command: "UpdateItem",
      match: () => ++n > 1,
      times: 3,
      fault: { kind: "beforeApply", error: "ThrottlingException" },
    });
    await rec.acquire(0, limiter, { ...call, fails: true });
    assert.equal(fc.calls.attempts.get("UpdateItem"), sent + 1 + 3);
    assert.equal(errors.length, 1, "the failed rollback reaches onError");
    for (let i = 0; i < 2; i++) await rec.acquire(0, limiter, call);
  } finally {
    await limiter.close();
    fc[Symbol.dispose]();
  }
  const { tc } = await storedTk(t.repo, "solo", "rpm");
  assert.equal(tc, 6000n, "5 committed, 1 left charged by the failed rollback");
  const params = { cp: 60_000n, ra: 60_000n, rp: 1000n };
  const limits = [{ bucket: "solo", limit: "rpm", params }];
  // The store history saw the throttled write fail (may have applied): it holds.
  const stored = check({
    ...rec.storeHistory(t0, limits),
    finalConsumed: [{ bucket: "solo", limit: "rpm", tcMilli: tc }],
  }, { slackMilli: 1n });
  assert.ok(stored.ok, `store history: ${format(stored)}`);
  const caller = check(
    rec.callerHistory(t0, limits, new Map([["solo", tc]])),
    { slackMilli: 1n },
  );
  assert.ok(caller.ok, `caller history: ${format(caller)}`);
});

Deno.test("localReserve: cascade and several limits are served when all are covered, and go to DynamoDB otherwise", async () => {
  await using t = await freshRepo();
  await t.repo.setSystemDefaults([
    Limit.custom("rpm", 1000, 1000, 3600),
    Limit.custom("tpm", 100_000, 100_000, 3600),
  ]);
  await t.repo.createEntity("parent");
  await t.repo.createEntity("child", { parentId: "parent", cascade: true });
  const limiter = reserveLimiter(t.repo, {
    localReserve: { ttlMs: 60_000, env: {} },
  });
  const req = {
    entityId: "child",
    resource: "api",
    consume: { rpm: 1, tpm: 100 },
  };
  t.calls.reset();
  for (let i = 0; i < 100; i++) await limiter.acquire(req, () => {});
  const s = limiter.reserveStats();
  assert.ok((s?.localAdmissions ?? 0) >= 60, JSON.stringify(s));
  assert.ok(t.calls.total() < 50, `${t.calls.total()} calls for 100 acquires`);
  await limiter.close();
  for (const entityId of ["child", "parent"]) {
    const rpm = await storedTk(t.repo, entityId, "rpm");
    const tpm = await storedTk(t.repo, entityId, "tpm");
    assert.equal(rpm.tc, 100_000n, `${entityId} rpm`);
    assert.equal(tpm.tc, 10_000_000n, `${entityId} tpm`);
  }

  // Only rpm served: calls consuming tpm go to DynamoDB, one write each.
  const partial = reserveLimiter(t.repo, {
    localReserve: { ttlMs: 60_000, env: {}, limits: ["rpm"] },
  });
  for (let i = 0; i < 5; i++) await partial.acquire(req, () => {});
  t.calls.reset();
  for (let i = 0; i < 20; i++) await partial.acquire(req, () => {});
  assert.equal(partial.reserveStats()?.slicesTaken, 0);
  assert.equal(t.calls.total(), 40, "one write per bucket per acquire");
  await partial.close();
});
