/**
 * A charge whose write applies after its caller's deadline is given back,
 * not stranded. With the real clock, DynamoDB Local and an injected slow
 * answer (the write applies at once, its answer is held past the caller's
 * deadline): the caller is answered at its deadline, the write succeeds in
 * the background, and the library gives the charge back. The bucket ends
 * with exactly the admitted tokens consumed plus what was reported
 * stranded, and (every late write applied, every give-back within its
 * grace) nothing is reported stranded: before, every timed-out charge was
 * reported stranded at once and left standing.
 */
import assert from "node:assert/strict";
import {
  Limit,
  RateLimiter,
  RateLimiterUnavailable,
  Repository,
  type StrandedCharge,
} from "../../mod.ts";
import { faultyClient } from "./_faults.ts";
import { tableName } from "./_harness.ts";
import { num, rawBucket } from "./_stored.ts";

/** The write's answer is held this long (it applied at once). */
const SLOW_ANSWER_MS = 250;
/** The caller's deadline: passes while a slow answer is held. */
const DEADLINE_MS = 80;

async function run(coalesce: boolean, parallel: number): Promise<void> {
  using fc = await faultyClient({ maxAttempts: 3, seed: coalesce ? 7 : 3 });
  const repo = await Repository.open({
    client: fc.client,
    stack: tableName("late"),
    provision: true,
  });
  try {
    await repo.setResourceDefaults("api", [Limit.perMinute("rpm", 1e9)]);
    const stranded: StrandedCharge[] = [];
    const limiter = new RateLimiter(repo, {
      coalesceWrites: coalesce,
      onStranded: (s) => stranded.push(s),
    });
    const req = { entityId: "k", resource: "api", consume: { rpm: 1 } };
    await limiter.acquire(req, () => {}); // the bucket exists and is known
    let admitted = 1;
    let timedOut = 0;
    // Half the bucket writes (charges and give-backs) answer late.
    fc.faults.inject({
      command: "UpdateItem",
      probability: 0.5,
      fault: { kind: "delay", ms: SLOW_ANSWER_MS, phase: "response" },
    });
    for (let round = 0; round < 30; round++) {
      await Promise.all(
        Array.from({ length: parallel }, async () => {
          try {
            await limiter.acquire({ ...req, timeoutMs: DEADLINE_MS }, () => {});
            admitted++;
          } catch (e) {
            if (!(e instanceof RateLimiterUnavailable)) throw e;
            timedOut++;
          }
        }),
      );
    }
    // close() waits for the late writes (250 ms) and their give-backs.
    await limiter.close();
    fc.faults.clear();
    const late = fc.faults.log.filter((f) => f.applied).length;
    const debits = stranded.filter((s) => s.kind === "debit")
      .reduce((a, s) => a + (s.amounts["rpm"] ?? 0), 0);
    const givebacks = stranded.filter((s) => s.kind === "giveback")
      .reduce((a, s) => a + (s.amounts["rpm"] ?? s.amounts["*"] ?? 0), 0);
    const tc = num(await rawBucket(fc.client, repo, "k", "api"), "b_rpm_tc");
    const what =
      `admitted ${admitted}, timed out ${timedOut}, slow answers ${late}, stranded reports ${stranded.length} (debits ${debits}, give-backs ${givebacks}), tc ${tc}`;
    assert.ok(timedOut >= 5, `too few deadlines passed: ${what}`);
    // Every slow answer is a write that applied past its caller's deadline.
    assert.ok(late >= 5, `too few late writes: ${what}`);
    // Exact accounting: the bucket lost the admitted tokens, plus only what was reported stranded.
    assert.equal(tc, (admitted + debits + givebacks) * 1000, what);
    // Every late write applied and every give-back had its grace: nothing stranded.
    assert.ok(stranded.length <= Math.floor(timedOut / 10), what);
  } finally {
    await repo.deleteTable().catch(() => {});
  }
}

Deno.test({
  name:
    "charges whose writes apply after their callers' deadlines are given back: the bucket keeps exactly the admitted tokens (one write per acquire)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () => run(false, 1),
});

Deno.test({
  name:
    "charges whose coalesced writes apply after their callers' deadlines are given back, each request its own share",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () => run(true, 4),
});
