import assert from "node:assert/strict";
import {
  Limit,
  RateLimiterUnavailable,
  type StrandedCharge,
} from "../../mod.ts";
import { createTestLimiter } from "../../testing.ts";
import { answerAfterDeadline } from "../../tests/_fakes/late_answer.ts";
import { currentBatch } from "./batch_queue.ts";

const REF = { ns: "default", entityId: "k", resource: "api", shard: 0 };

/**
 * A limiter on the memory store whose next write is held until `release`,
 * and whose writes, while `racing`, each lose a race: another writer moves
 * the item's refill time first, so the write's condition fails (a batch
 * that loses every race places none of its give-back).
 */
function setup() {
  const stranded: StrandedCharge[] = [];
  let gate: Promise<void> | null = null;
  let release = (): void => {};
  const state = {
    racing: false,
    /** Runs (and is awaited) before the first write that loses a race. */
    onFirstRace: null as (() => Promise<void>) | null,
    /** Requests carried by each write that lost a race. */
    batches: [] as number[],
    /** Plain or slow writes sent. */
    writes: 0,
    /** A debt write applies, and its answer comes after its deadline passed. */
    lateDebt: false,
  };
  const t = createTestLimiter({
    store: {
      hook: async (phase, op, ws) => {
        if (op !== "write") return;
        if (phase === "after") {
          if (state.lateDebt && ws[0]?.kind === "debt") {
            await answerAfterDeadline();
          }
          return;
        }
        if (ws[0]?.kind !== "debt") state.writes++;
        if (gate) {
          const g = gate;
          gate = null;
          await g;
          return;
        }
        if (!state.racing || ws[0]?.kind === "debt") return;
        state.batches.push(currentBatch()?.length ?? 1);
        const raw = t.store.raw(REF);
        assert.ok(raw);
        const rf = raw["rf"] as { N: string };
        raw["rf"] = { N: String(BigInt(rf.N) - 1n) };
        t.store.putRaw(REF, raw);
        const first = state.onFirstRace;
        state.onFirstRace = null;
        if (first) await first();
      },
    },
    limiter: {
      onError: () => {},
      onStranded: (s) => stranded.push(s),
      coalesceWrites: true,
    },
  });
  t.source.setSystemDefaults([Limit.perMinute("rpm", 1000)]);
  const tc = () => t.store.get(REF)?.limits.get("rpm")?.tc;
  return {
    ...t,
    stranded,
    state,
    tc,
    hold: () => void (gate = new Promise((r) => (release = r))),
    release: () => release(),
  };
}

const req = { entityId: "k", resource: "api", consume: { rpm: 10 } };
const tick = () => new Promise((r) => setTimeout(r, 20));

for (const quits of ["giveback", "debit"] as const) {
  Deno.test(`a coalesced delta write that places only part of the give-backs tells a caller who gave up mid-write its exact unplaced part (the ${quits} gives up)`, async () => {
    const t = setup();
    const held = await t.limiter.acquire(req);
    const gives = await t.limiter.acquire(req); // rolled back: gives 10 back
    const takes = await t.limiter.acquire(req); // commits 4 more
    assert.equal(t.tc(), 30_000n);
    // A write in flight on the item: the next two deltas queue and coalesce.
    held.adjust({ rpm: 1 });
    t.hold();
    const first = held.commit();
    await tick();
    const quit = new AbortController();
    const giving = gives.rollback(
      quits === "giveback" ? { signal: quit.signal } : {},
    );
    takes.adjust({ rpm: 4 });
    const taking = takes.commit(
      quits === "debit" ? { signal: quit.signal } : {},
    );
    // The batch (-10 + 4) loses every race: none of its give-back is placed,
    // and one caller gives up while the write carries its share.
    t.state.racing = true;
    t.state.onFirstRace = async () => {
      quit.abort();
      await tick();
    };
    await tick();
    t.release();
    await first;
    const [g, c] = await Promise.allSettled([giving, taking]);
    t.state.racing = false;
    const failed = quits === "giveback" ? g : c;
    const other = quits === "giveback" ? c : g;
    assert.equal(failed.status, "rejected");
    assert.ok(
      (failed as PromiseRejectedResult).reason instanceof
        RateLimiterUnavailable,
    );
    assert.equal(other.status, "fulfilled");
    assert.ok(t.state.batches.length > 0, "the batch lost races");
    assert.ok(
      t.state.batches.every((n) => n === 2),
      `every losing write carried both deltas: ${t.state.batches}`,
    );
    await t.limiter.close(); // the late outcome of the caller who gave up
    // The debit took 4 of the 10 given back; the other 6 were not placed.
    assert.deepEqual(
      t.stranded.map((s) => [s.kind, s.amounts]),
      [["giveback", { "*": 6 }]],
    );
    assert.equal(t.tc(), 31_000n, "the coalesced write applied nothing");
    // Every charge is accounted for: committed (11 + 14) or reported (6).
    assert.equal(t.tc(), (11n + 14n + 6n) * 1000n);
    // The delta of the caller who gave up counts as applied: a retry sends nothing.
    const writes = t.state.writes;
    if (quits === "debit") await takes.commit();
    else await gives.rollback();
    assert.equal(t.state.writes, writes, "nothing left to send");
    assert.equal(t.tc(), 31_000n);
    assert.equal(t.stranded.length, 1);
  });
}

Deno.test("a coalesced delta write that lost every race and whose debt write applied after every caller gave up tells each its exact unplaced part", async () => {
  const t = setup();
  t.source.setSystemDefaults([
    Limit.perMinute("rpm", 1000),
    Limit.perMinute("tpm", 1000),
  ]);
  const both = { ...req, consume: { rpm: 10, tpm: 10 } };
  const held = await t.limiter.acquire(both);
  const gives = await t.limiter.acquire(both); // rolled back: gives 10 + 10 back
  const takes = await t.limiter.acquire(both); // commits 15 more rpm
  // A write in flight on the item: the next two deltas queue and coalesce.
  held.adjust({ rpm: 1 });
  t.hold();
  const first = held.commit();
  await tick();
  const giving = gives.rollback({ timeoutMs: 250 });
  takes.adjust({ rpm: 15 });
  const taking = takes.commit({ timeoutMs: 250 });
  // The batch (rpm +5, tpm -10) loses every race, then its debt write takes
  // the 5 and is answered only after both callers gave up.
  t.state.racing = true;
  t.state.lateDebt = true;
  await tick();
  t.release();
  await first;
  const [g, c] = await Promise.allSettled([giving, taking]);
  t.state.racing = false;
  t.state.lateDebt = false;
  for (const r of [g, c]) {
    assert.equal(r.status, "rejected");
    assert.ok(
      (r as PromiseRejectedResult).reason instanceof RateLimiterUnavailable,
    );
  }
  assert.ok(t.state.batches.length > 0, "the batch lost races");
  assert.ok(
    t.state.batches.every((n) => n === 2),
    `every losing write carried both deltas: ${t.state.batches}`,
  );
  await t.limiter.close(); // the late outcome of the debt write
  // None of the 10 tpm given back was placed: the rollback's part.
  assert.deepEqual(
    t.stranded.map((s) => [s.kind, s.amounts]),
    [["giveback", { "*": 10 }]],
  );
  const tc = (name: string) => t.store.get(REF)?.limits.get(name)?.tc;
  assert.equal(tc("rpm"), 36_000n, "11 + 0 + 25: the debt took the net 5");
  assert.equal(tc("tpm"), 30_000n, "the give-back was not placed");
  // Both deltas count as applied: retries send nothing.
  const writes = t.state.writes;
  await gives.rollback();
  await takes.commit();
  assert.equal(t.state.writes, writes, "nothing left to send");
  assert.equal(t.stranded.length, 1);
});
