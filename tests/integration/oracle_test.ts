// deno-lint-ignore-file no-console -- every history prints its seed and path for replay
/**
 * The admission oracle: random concurrent histories of the real
 * `RateLimiter` on DynamoDB Local, checked against the ideal token bucket
 * by the sound checker of `tests/_oracle/checker.ts`. The history driver,
 * the mapping of a history to the checker's operations and the slack
 * derivations are in `_oracle_driver.ts` (shared with `dev/soak.ts`, which
 * runs many more histories).
 *
 * Each property prints its seed, and every history its path, at the start.
 * Replay one history:
 * `ZAEL_ORACLE_SEED=<seed> ZAEL_ORACLE_PATH=<path> ZAEL_ORACLE_PROFILE=<clean|faults|mixed> deno task test:integration`
 * (add `--filter oracle` after the task's arguments to skip the other files).
 * `ZAEL_ORACLE_RUNS=<n>` changes the number of histories per property;
 * `ZAEL_ORACLE_LENIENT=1` counts the findings pinned below instead of
 * failing on them (for a build that still has them);
 * `ZAEL_ORACLE_VERBOSE=1` adds every write's expressions to a failure's
 * account;
 * `ZAEL_ORACLE_SHRINK=1` lets fast-check shrink a failure (every shrink step
 * is a real history: slow); `ZAEL_ORACLE_CONFIG_FROM=call|rf` checks every
 * config change from the config call, or from the bucket's stored `rf`
 * (default: from the call, except the Python client's raw rewrite).
 *
 * Bounded: the two properties run 6 histories each (20-60 actions, about
 * 1-12 s each), the finding tests about 15 s: about 90 s for the file on
 * two cores (65-80 s for the properties).
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { DynamoDBClient, UpdateItemCommand } from "@aws-sdk/client-dynamodb";
import {
  Limit,
  RateLimiter,
  RateLimiterUnavailable,
  RateLimitExceeded,
  Repository,
  type StrandedCharge,
} from "../../mod.ts";
import { sleep } from "../../core/clock.ts";
import {
  check,
  format,
  type Operation,
  type Report,
} from "../_oracle/checker.ts";
import type { LimitParams } from "../_oracle/ideal.ts";
import {
  openOracleEnv,
  type Profile,
  runHistory,
  scenarioArb,
  type ScenarioSize,
  summary,
} from "./_oracle_driver.ts";
import { faultyClient } from "./_faults.ts";
import { endpoint, freshRepo, localClient } from "./_harness.ts";
import { num, rawBucket, rawGet } from "./_stored.ts";

const SEED = Deno.env.get("ZAEL_ORACLE_SEED");
const PATH = Deno.env.get("ZAEL_ORACLE_PATH");
const PROFILE = Deno.env.get("ZAEL_ORACLE_PROFILE");
const RUNS = Deno.env.get("ZAEL_ORACLE_RUNS");
const SHRINK = Deno.env.get("ZAEL_ORACLE_SHRINK") === "1";
const STRICT = Deno.env.get("ZAEL_ORACLE_LENIENT") !== "1";
const CONFIG_FROM_ENV = Deno.env.get("ZAEL_ORACLE_CONFIG_FROM");
const CONFIG_FROM = CONFIG_FROM_ENV === "call" || CONFIG_FROM_ENV === "rf"
  ? CONFIG_FROM_ENV
  : "auto";

async function property(
  profile: Profile,
  defaultRuns: number,
  size: ScenarioSize = {},
): Promise<number> {
  let coalesced = 0;
  await using env = await openOracleEnv();
  const seed = SEED !== undefined
    ? Number(SEED)
    : Math.floor(Math.random() * 0x7fffffff);
  const numRuns = PATH !== undefined ? 1 : Number(RUNS ?? defaultRuns);
  console.log(
    `oracle/${profile}: seed ${seed}${
      PATH !== undefined ? `, path ${PATH}` : ""
    }, ${numRuns} histories (replay one: ZAEL_ORACLE_SEED=${seed} ZAEL_ORACLE_PATH=<path> ZAEL_ORACLE_PROFILE=${profile})`,
  );
  let index = 0;
  await fc.assert(
    fc.asyncProperty(scenarioArb(profile, size), async (scenario) => {
      const path = PATH !== undefined && index === 0 ? PATH : String(index);
      index++;
      console.log(
        `  ${profile} seed ${seed} path ${path}: ${scenario.actions.length} actions, ${scenario.clients.length} clients`,
      );
      const r = await runHistory(env, scenario, {
        configFrom: CONFIG_FROM,
        strict: STRICT,
      });
      console.log(`    ${summary(r)}`);
      coalesced += r.stats.coalescedWrites;
      if (!r.ok) {
        throw new Error(
          `history at seed ${seed}, path ${path} (replay: ZAEL_ORACLE_SEED=${seed} ZAEL_ORACLE_PATH=${path} ZAEL_ORACLE_PROFILE=${profile}):\n${r.message}`,
        );
      }
    }),
    {
      seed,
      numRuns,
      endOnFailure: !SHRINK,
      ...(PATH !== undefined ? { path: PATH } : {}),
    },
  );
  return coalesced;
}

const sanitizers = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name:
    "oracle: several clients with skewed clocks, config changes by a second writer and every lease path admit no more than the ideal bucket",
  ignore: PROFILE !== undefined && PROFILE !== "clean",
  ...sanitizers,
  fn: async () => void await property("clean", 6),
});

Deno.test({
  name:
    "oracle: with injected faults (errors before and after apply, throttling, conflicts, delays, hangs) no over-admission, no double charge, every deadline kept, every charge accounted for",
  ignore: PROFILE !== undefined && PROFILE !== "faults",
  ...sanitizers,
  fn: async () => void await property("faults", 6),
});

Deno.test({
  name:
    "oracle: one or two processes with bursts of up to 24 concurrent acquires (coalesced writes) and injected faults admit no more than the ideal bucket",
  ignore: PROFILE !== undefined && PROFILE !== "faults",
  ...sanitizers,
  async fn() {
    const size = { maxBurst: 24, maxClients: 2 };
    let coalesced = await property("faults", 4, size);
    // On a loaded machine most acquires of a seed can end at their deadline
    // with nothing to coalesce: more histories (new seeds) until one did.
    for (
      let more = 0;
      coalesced === 0 && SEED === undefined && more < 3;
      more++
    ) {
      coalesced += await property("faults", 4, size);
    }
    if (PATH === undefined) {
      assert.ok(coalesced > 0, "no write carried several acquires");
    }
  },
});

Deno.test({
  name: "oracle: mixed profile (the soak's; replay only)",
  ignore: PROFILE !== "mixed",
  ...sanitizers,
  fn: async () => void await property("mixed", 7),
});

// ---------------------------------------------------------------------------
// Findings of the oracle, as minimal tests. Each failed on 8877e6d's parent
// (core/ as of 2016d5f..23e36d3) and passes since d4981c1 ("Oracle findings
// fixed"); they stay as regression tests. The properties fail on them too
// (ZAEL_ORACLE_LENIENT=1 counts them instead).

Deno.test({
  // FINDING, fixed (core/bucket_item.ts slowPathWrite, used by the refill write of
  // core/bucket_writer.ts charge and the slow path): the admission floor
  // `tk >= charge - refill` is only added when the charge exceeds the
  // refill the write claims (`-delta > 0`), as if tk could not be negative.
  // A bucket in debt (a lease adjusted upward, "the bucket may go into
  // debt"), or one debited by another client since the state the write was
  // planned on, then admits a request its balance does not cover.
  // Capacity 10, 2 tokens/s; take 10 and adjust +10 (tk = -10000); 3 s later
  // the ideal balance is -4: a request for 1 must be refused. Actual: the
  // refill write (refill 6000 >= charge 1000, so no floor; rf and tk <=
  // tkBefore hold) is applied and the request admitted (tk -4926 after).
  // Seen in the soak as over-admissions after a positive lease adjustment.
  name:
    "finding: a bucket in debt refuses a request its balance does not cover, even when the refill since rf exceeds the request",
  ...sanitizers,
  async fn() {
    await using env = await freshRepo();
    await env.repo.setLimits("k", [Limit.custom("a", 10, 2, 1)], {
      resource: "api",
    });
    const limiter = new RateLimiter(env.repo);
    const req = (n: number) => ({
      entityId: "k",
      resource: "api",
      consume: { a: n },
    });
    await limiter.acquire(req(10), (lease) => {
      lease.adjust({ a: 10 });
    });
    assert.equal(
      num(await rawBucket(env.client, env.repo, "k", "api"), "b_a_tk"),
      -10_000,
    );
    await sleep(3000);
    // Ideal balance: -10 + 2/s x ~3 s = about -4 tokens.
    await assert.rejects(
      limiter.acquire(req(1), () => {}),
      RateLimitExceeded,
      "admitted 1 token on a balance of about -4",
    );
  },
});

Deno.test({
  // FINDING, fixed (core/bucket_writer.ts apply/#refillDelta): a give-back that
  // does not fit under the ceiling of the client's *known* state is written
  // as a refill write capped against that known balance (`after = min(known
  // + refill + give-back, ceiling)`, ADDed as `after - known`), under the
  // condition `tk <= known`. When the stored balance is lower than known
  // (another client took tokens since; or the known state is the slow
  // path's upper bound), the cap bites on the wrong balance and the
  // give-back is partly lost, while tc records it in full: under-admission
  // beyond the documented 1% holdback. Capacity 10 per hour; A takes 2 (A
  // knows 8), B takes 5 (stored 3), A gives back 4 (lease.adjust -4, then
  // commit). Ideal: 7. Actual: 5 (tk 5000, tc 3000). Seen in the soak as
  // unjustified refusals after a rollback into a bucket A believed full.
  name:
    "finding: a give-back is capped against the stored balance, not against the client's stale view of it",
  ...sanitizers,
  async fn() {
    await using env = await freshRepo();
    await env.repo.setLimits("k", [Limit.perHour("a", 10)], {
      resource: "api",
    });
    const a = new RateLimiter(env.repo);
    const { client } = await localClient();
    try {
      const b = new RateLimiter(
        await Repository.open({ client, stack: env.repo.tableName }),
      );
      const req = (n: number) => ({
        entityId: "k",
        resource: "api",
        consume: { a: n },
      });
      const lease = await a.acquire(req(2));
      await b.acquire(req(5), () => {});
      lease.adjust({ a: -4 });
      await lease.commit();
      const raw = await rawBucket(env.client, env.repo, "k", "api");
      assert.equal(num(raw, "b_a_tc"), 3000);
      assert.equal(
        num(raw, "b_a_tk"),
        7000,
        "the give-back was capped at the stale balance",
      );
    } finally {
      client.destroy();
    }
  },
});

Deno.test({
  // FINDING, fixed (core/acquire/slow_path.ts send, MAX_CONFLICT_RETRIES = 6): the slow
  // path refuses after 7 transaction conflicts in a row, with the Retry-After
  // of the next token (360 s on 10 per hour) although 9 tokens are there.
  // The README: "After 16 lost races in a row within the deadline, a request
  // is refused". A cold client (slow path, a single-item UpdateItem) and 7
  // injected TransactionConflictExceptions: refused in ~0.7 s (6: admitted).
  name:
    "finding: a request is refused for contention only after 16 lost races (slow path: 7 transaction conflicts)",
  ...sanitizers,
  async fn() {
    await using env = await freshRepo();
    await env.repo.setLimits("k", [Limit.perHour("a", 10)], {
      resource: "api",
    });
    const req = { entityId: "k", resource: "api", consume: { a: 1 } };
    await new RateLimiter(env.repo).acquire(req, () => {});
    using fcl = await faultyClient();
    const cold = new RateLimiter(
      await Repository.open({ client: fcl.client, stack: env.repo.tableName }),
    );
    fcl.faults.inject({
      command: "UpdateItem",
      times: 7,
      fault: { kind: "beforeApply", error: "TransactionConflictException" },
    });
    await cold.acquire(req, () => {});
  },
});

Deno.test({
  // FINDING, fixed (core/repository.ts config cache, core/limiter.ts): concurrent
  // calls of one limiter share the in-flight config read; a call that
  // awaits a read another call started is bounded by that call's deadline,
  // not its own. The read hangs (answer held); one acquire with the
  // limiter's 3000 ms deadline starts it, another with timeoutMs 200 (allow
  // mode) waits on it. Expected: the second returns within 200 ms + 1.25 s.
  // Actual: after about 3000 ms. In the soak: an acquire with a 236 ms
  // deadline returned after 1492 ms.
  name:
    "finding: an acquire returns within its own deadline while another call's config read hangs",
  ...sanitizers,
  async fn() {
    await using env = await freshRepo();
    await env.repo.setSystemDefaults([Limit.perHour("a", 100)]);
    using fcl = await faultyClient();
    const limiter = new RateLimiter(
      await Repository.open({ client: fcl.client, stack: env.repo.tableName }),
      { timeoutMs: 3000, onError: () => {} },
    );
    fcl.faults.inject({
      command: ["BatchGetItem", "GetItem"],
      times: 1,
      fault: { kind: "hang", phase: "response" },
    });
    const req = { entityId: "k", resource: "api", consume: { a: 1 } };
    const slow = limiter.acquire(req, () => {}).catch(() => {});
    const t = Date.now();
    await limiter.acquire(
      { ...req, onUnavailable: "allow", timeoutMs: 200 },
      () => {},
    );
    const took = Date.now() - t;
    await slow;
    assert.ok(took <= 200 + 1250, `took ${took} ms with a 200 ms deadline`);
  },
});

// ---------------------------------------------------------------------------
// Findings: config changes are applied to the stored pair (tk, rf) as if the
// new parameters had been in force since the bucket's last refill (`rf`).
// Both `Repository.setLimits` (which rewrites `b_x_cp/ra/rp` and keeps
// `tk` and `rf`) and `setSystemDefaults` (the next writer refills with the
// new parameters from the stored `rf`) do it, and so does the Python
// client's raw rewrite. The ideal bucket refills up to the change with the
// old parameters, then switches (tests/_oracle/ideal.ts, setParams).
// Fixed in d4981c1 (a change is settled under the smaller capacity and the
// slower rate of old and new). The properties check setSystemDefaults and
// setLimits from the config call; the Python client's raw rewrite, which
// the limiter can only see as stored parameters, from the stored rf.

function paramsOf(l: Limit): LimitParams {
  return {
    cp: BigInt(l.capacity) * 1000n,
    ra: BigInt(l.refillAmount) * 1000n,
    rp: BigInt(l.refillPeriodSeconds) * 1000n,
  };
}

/**
 * Drains a bucket of `before`, leaves it idle, raises its limit to `after`
 * with `setLimits`, then a process with a fresh cache acquires one token at
 * a time: the history and the checker's report (config at the call).
 */
async function raisedLimit(
  before: Limit,
  after: Limit,
  drain: number,
  idleMs: number,
  tries: number,
): Promise<{ report: Report; admitted: number }> {
  await using env = await freshRepo();
  const req = (n: number) => ({
    entityId: "k",
    resource: "api",
    consume: { a: n },
  });
  const charge = (n: number) => [{
    bucket: "k",
    limit: "a",
    amountMilli: BigInt(n) * 1000n,
  }];
  await env.repo.setLimits("k", [before], { resource: "api" });
  const t0 = Date.now();
  const ops: Operation[] = [];
  let s = Date.now();
  await new RateLimiter(env.repo).acquire(req(drain), () => {});
  ops.push({
    kind: "acquire",
    id: "drain",
    start: BigInt(s),
    end: BigInt(Date.now()),
    charges: charge(drain),
    outcome: "admitted",
  });
  await sleep(idleMs);
  s = Date.now();
  await env.repo.setLimits("k", [after], { resource: "api" });
  ops.push({
    kind: "config",
    id: "raise",
    bucket: "k",
    limit: "a",
    params: paramsOf(after),
    start: BigInt(s),
    end: BigInt(Date.now()),
  });
  let client: DynamoDBClient | null = null;
  let admitted = 0;
  try {
    client = (await localClient()).client;
    const fresh = new RateLimiter(
      await Repository.open({ client, stack: env.repo.tableName }),
    );
    for (let i = 0; i < tries; i++) {
      s = Date.now();
      let outcome: "admitted" | "refused" = "admitted";
      try {
        await fresh.acquire(req(1), () => {});
        admitted++;
      } catch (e) {
        if (!(e instanceof RateLimitExceeded)) throw e;
        outcome = "refused";
      }
      ops.push({
        kind: "acquire",
        id: `a${i}`,
        start: BigInt(s),
        end: BigInt(Date.now()),
        charges: charge(1),
        outcome,
      });
    }
  } finally {
    client?.destroy();
  }
  const report = check({
    t0: BigInt(t0),
    limits: [{ bucket: "k", limit: "a", params: paramsOf(before) }],
    operations: ops,
  }, { slackMilli: 1n, refusalSlackMilli: 1000n });
  return { report, admitted };
}

Deno.test({
  // FINDING, fixed (core/): a raised refill rate is credited retroactively since the
  // stored `rf`. Capacity 10, 1 token per 4 s, drained; 2 s later (ideal:
  // 0.5 token) the rate becomes 10 per second. Expected: at most about 1
  // token in the next ~100 ms (0.5 + 10/s × elapsed). Actual: 10 admitted at
  // once (the new rate applied to the 2 s since rf: 20 tokens, clamped to
  // 10). Same with setSystemDefaults instead of setLimits.
  name:
    "finding: a refill rate raised by another writer is not credited for the time before the change",
  ...sanitizers,
  async fn() {
    const { report, admitted } = await raisedLimit(
      Limit.custom("a", 10, 1, 4),
      Limit.custom("a", 10, 10, 1),
      10,
      2000,
      10,
    );
    assert.ok(report.ok, `admitted ${admitted} of 10:\n${format(report)}`);
  },
});

Deno.test({
  // FINDING, fixed (core/): a raised capacity credits the refill the old capacity
  // had clamped away. Capacity 2, 2 tokens per second, drained, idle 5 s
  // (full at 2; 10 tokens of refill were clamped), then capacity 20.
  // Expected: 2 tokens plus 2/s (about 2 in the next ~100 ms). Actual: 10
  // admitted at once (tk 0 + the 5 s of refill since rf, under the new
  // capacity).
  name:
    "finding: a capacity raised by another writer starts from the balance the bucket had, not from the refill its old capacity clamped away",
  ...sanitizers,
  async fn() {
    const { report, admitted } = await raisedLimit(
      Limit.custom("a", 2, 2, 1),
      Limit.custom("a", 20, 2, 1),
      2,
      5000,
      20,
    );
    assert.ok(report.ok, `admitted ${admitted} of 20:\n${format(report)}`);
  },
});

Deno.test({
  // FINDING, fixed (core/acquire/fast_path.ts fastPath, core/lease.ts consume): when both writes
  // of a cascade fail in a way that may have applied them (here: both
  // applied, answers lost, the deadline passes), only the first failed side
  // (the child) is reported to onStranded: the loop over the results
  // reports and throws at the first rejection. Expected: a stranded debit
  // for the child and one for the parent (both tc went from 1000 to 2000).
  // Actual: only the child's.
  name:
    "finding: when both writes of a cascade fail ambiguously, both possibly applied charges are reported stranded",
  ...sanitizers,
  async fn() {
    await using env = await freshRepo();
    await env.repo.createEntity("p");
    await env.repo.setLimits("p", [Limit.perHour("rph", 100)], {
      resource: "api",
    });
    await env.repo.createEntity("c", { parentId: "p", cascade: true });
    await env.repo.setLimits("c", [Limit.perHour("rph", 100)], {
      resource: "api",
    });
    using fcl = await faultyClient();
    const stranded: StrandedCharge[] = [];
    const limiter = new RateLimiter(
      await Repository.open({ client: fcl.client, stack: env.repo.tableName }),
      {
        // Long enough for both writes to reach DynamoDB Local on a loaded
        // machine before the deadline aborts their hung answers.
        timeoutMs: 1500,
        onStranded: (s) => stranded.push(s),
        onError: () => {},
      },
    );
    const req = { entityId: "c", resource: "api", consume: { rph: 1 } };
    // Warm (with a generous deadline): the next acquire writes both sides at once.
    await limiter.acquire({ ...req, timeoutMs: 20_000 }, () => {});
    fcl.faults.inject({
      command: "UpdateItem",
      times: 2,
      fault: { kind: "hang", phase: "response" },
    });
    await assert.rejects(
      limiter.acquire(req, () => {}),
      RateLimiterUnavailable,
    );
    assert.deepEqual(fcl.faults.log.map((r) => r.applied), [true, true]);
    assert.equal(
      num(await rawBucket(env.client, env.repo, "p", "api"), "b_rph_tc"),
      2000,
    );
    // The writes run on past the deadline; their answers are lost (the late
    // outcome is unknown, not "applied"): both charges are reported then.
    fcl.faults.releaseAll();
    for (let i = 0; i < 60 && stranded.length < 2; i++) await sleep(50);
    assert.deepEqual(
      stranded.map((s) => [s.kind, s.entityId]).sort(),
      [["debit", "c"], ["debit", "p"]],
    );
  },
});

Deno.test({
  // FINDING (environment, not core/): with the AWS SDK's Node HTTP handler
  // on Deno 2.9.6, a request aborted a few ms after it was sent can be
  // applied twice by DynamoDB Local (62 applications of 60 UpdateItem ADDs,
  // maxAttempts 1, no fault injection, aborted 6-11 ms after the send; the
  // same loop under Node 20, or with Deno's fetch, never exceeds 60). No
  // SDK-level guard can prevent it, so the library never aborts a write on
  // its caller's deadline (core/transport.ts sendWrite; the library-level
  // test is aborted_writes_test.ts), and the oracle models a write aborted
  // in flight as applied 0 or 1 times. This raw-SDK test stays ignored: it
  // documents the environment. Timing-dependent: run it a few times.
  name:
    "finding: an UpdateItem aborted in flight is applied at most once (Deno node:http under the SDK)",
  ignore: true,
  ...sanitizers,
  async fn() {
    await using env = await freshRepo();
    const client = new DynamoDBClient({
      endpoint: await endpoint(),
      region: "us-east-1",
      credentials: { accessKeyId: "local", secretAccessKey: "local" },
      maxAttempts: 1,
    });
    const n = 200;
    try {
      for (let i = 0; i < n; i++) {
        const ac = new AbortController();
        const timer = setTimeout(() => ac.abort(), 4 + (i % 11));
        await client.send(
          new UpdateItemCommand({
            TableName: env.repo.tableName,
            Key: { PK: { S: "counter" }, SK: { S: "x" } },
            UpdateExpression: "ADD n :one",
            ExpressionAttributeValues: { ":one": { N: "1" } },
          }),
          { abortSignal: ac.signal },
        ).catch(() => {});
        clearTimeout(timer);
      }
      await sleep(500);
      const item = await rawGet(env.client, env.repo.tableName, "counter", "x");
      const applied = item?.n?.N === undefined ? 0 : Number(item.n.N);
      assert.ok(applied <= n, `${applied} applications of ${n} commands`);
    } finally {
      client.destroy();
    }
  },
});
