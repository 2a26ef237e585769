/**
 * Lease writes that outlive their caller's deadline (`core/lease_writes.ts`):
 * with the real clock, DynamoDB Local and an injected slow answer (the write
 * applies at once, its answer is held past the caller's deadline), the
 * caller is answered at its deadline and the write succeeds in the
 * background. A `consume` that applied late is given back; a `commit` or
 * `rollback` that applied late counts as written, so a retried call writes
 * nothing of it again. The bucket ends holding exactly what the callers were
 * told, and nothing is reported stranded (before, each was reported at once:
 * a consume's charge stood, a commit's debit was written again by its retry).
 */
import assert from "node:assert/strict";
import {
  Limit,
  RateLimiter,
  RateLimiterUnavailable,
  Repository,
  type StrandedCharge,
} from "../../mod.ts";
import { type FaultyClient, faultyClient } from "./_faults.ts";
import { tableName } from "./_harness.ts";
import { num, rawBucket } from "./_stored.ts";

/** A held answer (the write applied at once). */
const SLOW_ANSWER_MS = 400;
/** The caller's deadline: passes while a slow answer is held. */
const DEADLINE_MS = 80;
/** Capacity of the limit, in tokens (a day's refill is negligible here). */
const CAPACITY = 100_000;

interface Setup {
  fc: FaultyClient;
  repo: Repository;
  limiter: RateLimiter;
  stranded: StrandedCharge[];
  /** The next UpdateItem's answer is held past the deadline. */
  holdNext(): void;
  /** UpdateItem commands sent so far. */
  updates(): number;
  /** The raw item's `tc` and `tk` in tokens. */
  stored(): Promise<{ tc: number; tk: number }>;
}

async function withSetup(
  name: string,
  coalesceWrites: boolean,
  fn: (s: Setup) => Promise<void>,
): Promise<void> {
  using fc = await faultyClient({ maxAttempts: 3, seed: 11 });
  const repo = await Repository.open({
    client: fc.client,
    stack: tableName(name),
    provision: true,
  });
  try {
    await repo.setResourceDefaults("api", [Limit.perDay("rpd", CAPACITY)]);
    const stranded: StrandedCharge[] = [];
    const limiter = new RateLimiter(repo, {
      coalesceWrites,
      onStranded: (s) => stranded.push(s),
    });
    await fn({
      fc,
      repo,
      limiter,
      stranded,
      holdNext: () =>
        void fc.faults.inject({
          command: "UpdateItem",
          times: 1,
          fault: { kind: "delay", ms: SLOW_ANSWER_MS, phase: "response" },
        }),
      updates: () => fc.calls.commands.get("UpdateItem") ?? 0,
      stored: async () => {
        const item = await rawBucket(fc.client, repo, "k", "api");
        return {
          tc: num(item, "b_rpd_tc") / 1000,
          tk: num(item, "b_rpd_tk") / 1000,
        };
      },
    });
  } finally {
    await repo.deleteTable().catch(() => {});
  }
}

/** `tk` is the capacity less what was consumed, plus at most a few seconds of a day's refill. */
function assertTk(tk: number, consumed: number, what: string): void {
  const want = CAPACITY - consumed;
  assert.ok(
    tk >= want - 0.001 && tk <= Math.min(CAPACITY, want + 20),
    `tk ${tk}, want ~${want}: ${what}`,
  );
}

const req = { entityId: "k", resource: "api", consume: { rpd: 10 } };

Deno.test({
  name:
    "lease.consume() whose charge applies after its deadline is given back, lease.commit() retried while its first write is held writes once, lease.rollback() held is not resent: the item holds what the callers were told",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withSetup("lease-late", false, async (s) => {
      // consume: the charge applies late; the caller was told it failed.
      const a = await s.limiter.acquire(req);
      s.holdNext();
      await assert.rejects(
        a.consume({ rpd: 5 }, { timeoutMs: DEADLINE_MS }),
        RateLimiterUnavailable,
      );
      await a.commit();
      await s.limiter.close(); // waits for the late charge's give-back (later acquires still work)
      // commit: retried at once, while the first write is still held.
      const b = await s.limiter.acquire(req);
      b.adjust({ rpd: 7 });
      s.holdNext();
      const before = s.updates();
      await assert.rejects(
        b.commit({ timeoutMs: DEADLINE_MS }),
        RateLimiterUnavailable,
      );
      await b.commit();
      assert.equal(b.state, "committed");
      assert.equal(s.updates() - before, 1, "the commit's delta written once");
      // rollback: its give-back applies late; the retry sends nothing.
      const c = await s.limiter.acquire(req);
      s.holdNext();
      const beforeRollback = s.updates();
      await assert.rejects(c.rollback({ timeoutMs: DEADLINE_MS }));
      await c.rollback();
      assert.equal(c.state, "rolled_back");
      assert.equal(s.updates() - beforeRollback, 1, "one give-back");
      await s.limiter.close(); // waits for the late outcomes and the consume's give-back
      const late = s.fc.faults.log.filter((f) => f.applied).length;
      assert.equal(late, 3, "three writes applied past their deadlines");
      const told = 10 + (10 + 7); // a: 10 (consume failed); b: 17; c: rolled back
      const { tc, tk } = await s.stored();
      const what = `tc ${tc}, tk ${tk}, stranded ${JSON.stringify(s.stranded)}`;
      assert.deepEqual(s.stranded, [], what);
      assert.equal(tc, told, what);
      assertTk(tk, told, what);
    }),
});

async function randomRun(coalesce: boolean, parallel: number): Promise<void> {
  await withSetup("lease-late-r", coalesce, async (s) => {
    let told = 0;
    let timedOut = 0;
    // Half the bucket writes answer late.
    s.fc.faults.inject({
      command: "UpdateItem",
      probability: 0.5,
      fault: { kind: "delay", ms: 250, phase: "response" },
    });
    for (let round = 0; round < 12; round++) {
      await Promise.all(
        Array.from({ length: parallel }, async (_, i) => {
          const lease = await s.limiter.acquire(req);
          let mine = 10;
          try {
            await lease.consume({ rpd: 3 }, { timeoutMs: DEADLINE_MS });
            mine += 3;
          } catch (e) {
            if (!(e instanceof RateLimiterUnavailable)) throw e;
            timedOut++;
          }
          lease.adjust({ rpd: (round + i) % 2 === 0 ? 4 : -2 });
          const rollback = (round + i) % 5 === 0;
          const end = (o?: { timeoutMs: number }): Promise<void> =>
            rollback ? lease.rollback(o) : lease.commit(o);
          try {
            await end({ timeoutMs: DEADLINE_MS });
          } catch (e) {
            if (!(e instanceof RateLimiterUnavailable)) throw e;
            timedOut++;
            await end(); // retried with the default deadline (past the held answer)
          }
          told += rollback ? 0 : mine + ((round + i) % 2 === 0 ? 4 : -2);
        }),
      );
    }
    await s.limiter.close();
    s.fc.faults.clear();
    const late = s.fc.faults.log.filter((f) => f.applied).length;
    const debits = s.stranded.filter((x) => x.kind === "debit")
      .reduce((a, x) => a + (x.amounts["rpd"] ?? 0), 0);
    const { tc, tk } = await s.stored();
    const what =
      `told ${told}, timed out ${timedOut}, slow answers ${late}, tc ${tc}, tk ${tk}, stranded ${
        JSON.stringify(s.stranded)
      }`;
    assert.ok(timedOut >= 5, `too few deadlines passed: ${what}`);
    // Every late write applied and every give-back had its grace: nothing stranded.
    assert.deepEqual(s.stranded, [], what);
    assert.equal(tc, told + debits, what);
    assertTk(tk, told, what);
  });
}

Deno.test({
  name:
    "leases whose consume, commit and rollback writes apply after their deadlines: the item holds exactly what the callers were told, nothing stranded",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () => randomRun(false, 1),
});

Deno.test({
  name:
    "leases whose coalesced writes apply after their deadlines: the item holds exactly what the callers were told, nothing stranded",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () => randomRun(true, 3),
});
