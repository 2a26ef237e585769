// deno-lint-ignore-file no-console -- a command-line tool: printing is its job
/**
 * Soak test of admission: the oracle of `tests/integration/oracle_test.ts`
 * (`tests/integration/_oracle_driver.ts`: the real limiter on DynamoDB Local,
 * several clients, skewed clocks, config changes, injected faults, checked
 * against the ideal token bucket) on many random histories, several at a
 * time, on its own DynamoDB Local.
 *
 * Usage: `deno task soak [-- options]`
 *
 * - `--histories N` stop after N histories (default 10000; env `ZAEL_SOAK_HISTORIES`)
 * - `--minutes M` stop after M minutes (default 30; env `ZAEL_SOAK_MINUTES`)
 * - `--parallel P` histories at a time (default 4)
 * - `--reserve-lanes R` lanes that run the local reserve's history of
 *   `tests/integration/_reserve_history.ts` alongside, on the same DynamoDB
 *   Local (default 1; 0: none). `deno task soak:reserve` runs only those.
 * - `--profile clean|faults|mixed` what to inject (default mixed)
 * - `--seed S` seed of the first history (history k uses S + k; default random)
 * - `--replay S` run the one history of seed S (with `--profile`) and print it
 * - `--keep-going` do not stop at the first violation
 * - `--lenient` count the findings pinned in `oracle_test.ts` instead of failing on them
 *
 * Prints progress (histories, over-admissions — must be 0 —, unjustified
 * refusals, accounting failures, stranded charges, acquire latency p50/p99)
 * and a final summary line; exits 1 on any violation, after printing the
 * seed, a replay command and the formatted report.
 */
import fc from "fast-check";
import { DynamoDbLocalError, startDynamoDbLocal } from "./dynamodb_local.ts";
import { format } from "../tests/_oracle/checker.ts";
import { reserveHistory } from "../tests/integration/_reserve_history.ts";
import {
  type HistoryResult,
  openOracleEnv,
  type Profile,
  runHistory,
  scenarioArb,
  summary,
} from "../tests/integration/_oracle_driver.ts";

interface Args {
  histories: number;
  minutes: number;
  parallel: number;
  profile: Profile;
  seed: number;
  replay: number | null;
  keepGoing: boolean;
  lenient: boolean;
  reserveLanes: number;
}

function usage(message: string): never {
  console.error(`soak: ${message}`);
  console.error(
    "usage: soak.ts [--histories N] [--minutes M] [--parallel P] [--reserve-lanes R] [--profile clean|faults|mixed] [--seed S] [--replay S] [--keep-going] [--lenient]",
  );
  Deno.exit(2);
}

function parseArgs(argv: readonly string[]): Args {
  const num = (name: string, v: string | undefined): number => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n)) {
      usage(`${name} needs a number`);
    }
    return n;
  };
  const env = (k: string): string | undefined => Deno.env.get(k);
  const args: Args = {
    histories: Number(env("ZAEL_SOAK_HISTORIES") ?? 10_000),
    minutes: Number(env("ZAEL_SOAK_MINUTES") ?? 30),
    parallel: 4,
    profile: "mixed",
    seed: Math.floor(Math.random() * 0x7fffffff),
    replay: null,
    keepGoing: false,
    lenient: false,
    reserveLanes: 1,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const [flag, inline] = a.includes("=") ? a.split("=", 2) : [a, undefined];
    const value = (): string | undefined => inline ?? argv[++i];
    switch (flag) {
      case "--":
        break;
      case "--histories":
        args.histories = num(flag, value());
        break;
      case "--minutes":
        args.minutes = num(flag, value());
        break;
      case "--parallel":
        args.parallel = Math.max(1, Math.floor(num(flag, value())));
        break;
      case "--reserve-lanes":
        args.reserveLanes = Math.max(0, Math.floor(num(flag, value())));
        break;
      case "--seed":
        args.seed = num(flag, value());
        break;
      case "--replay":
        args.replay = num(flag, value());
        break;
      case "--profile": {
        const p = value();
        if (p !== "clean" && p !== "faults" && p !== "mixed") {
          usage("--profile is clean, faults or mixed");
        }
        args.profile = p;
        break;
      }
      case "--keep-going":
        args.keepGoing = true;
        break;
      case "--lenient":
        args.lenient = true;
        break;
      default:
        usage(`unknown argument ${a}`);
    }
  }
  return args;
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.floor(p * sorted.length));
  return sorted[i] as number;
}

const args = parseArgs(Deno.args);
let local;
const given = Deno.env.get("ZAEL_TEST_ENDPOINT");
if (!given) {
  try {
    local = await startDynamoDbLocal({ maxHeap: "2g" });
  } catch (e) {
    console.error(e instanceof DynamoDbLocalError ? e.message : e);
    Deno.exit(1);
  }
}
const endpoint = given ?? (local as { endpoint: string }).endpoint;
const env = await openOracleEnv({ endpoint });

const arb = scenarioArb(args.profile);
const replayCommand = (seed: number): string =>
  `ZAEL_ORACLE_SEED=${seed} ZAEL_ORACLE_PATH=0 ZAEL_ORACLE_PROFILE=${args.profile} deno task test:integration  # or: deno task soak --profile ${args.profile} --replay ${seed}`;

let exitCode = 0;
try {
  if (args.replay !== null) {
    const [scenario] = fc.sample(arb, { seed: args.replay, numRuns: 1 });
    const r = await runHistory(env, scenario as NonNullable<typeof scenario>, {
      strict: !args.lenient,
    });
    console.log(summary(r));
    console.log(r.explain());
    exitCode = r.ok ? 0 : 1;
  } else {
    exitCode = await soak();
  }
} finally {
  await env[Symbol.asyncDispose]();
  await local?.stop();
}
Deno.exit(exitCode);

async function soak(): Promise<number> {
  const started = Date.now();
  const deadline = started + args.minutes * 60_000;
  const totals = {
    histories: 0,
    operations: 0,
    acquires: 0,
    admitted: 0,
    refused: 0,
    errors: 0,
    overAdmissions: 0,
    envelopes: 0,
    unjustifiedRefusals: 0,
    accounting: 0,
    violations: 0,
    stranded: 0,
    faults: 0,
    cachedRefusals: 0,
    exemptRefusals: 0,
    known: 0,
    maybeWrites: 0,
    clampedLosses: 0,
    maxSlackMs: 0,
    reserveHistories: 0,
    reserveAdmitted: 0,
    reserveLocal: 0,
  };
  const latencies: number[] = [];
  const knownKinds = new Map<string, number>();
  const kindOf = (text: string): string =>
    /refill writes without a floor/.test(text)
      ? "debt over-admission"
      : /^unreported/.test(text)
      ? "second ambiguous side not reported stranded"
      : /transaction conflicts/.test(text)
      ? "refused after 7 transaction conflicts"
      : /^deadline/.test(text)
      ? "deadline of a shared config read"
      : "other";
  const failures: { seed: number; result: HistoryResult }[] = [];
  let next = 0;
  let stop = false;
  const line = (): string => {
    const sorted = [...latencies].sort((a, b) => a - b);
    const minutes = ((Date.now() - started) / 60_000).toFixed(1);
    return `${totals.histories} histories in ${minutes} min (${totals.operations} ops, ${totals.acquires} acquires: ${totals.admitted} admitted, ${totals.refused} refused, ${totals.errors} errors); ` +
      `over-admissions ${
        totals.overAdmissions + totals.envelopes
      } (per acquire ${totals.overAdmissions}, envelope ${totals.envelopes}); ` +
      `unjustified refusals ${totals.unjustifiedRefusals}; accounting failures ${totals.accounting}; ` +
      `other violations ${totals.violations}; stranded charges ${totals.stranded}; faults injected ${totals.faults}; ` +
      `cached refusals ${totals.cachedRefusals}, exempt refusals ${totals.exemptRefusals}; known findings ${totals.known} (+ ${totals.clampedLosses} possible losses of clamped refill writes); writes aborted in flight ${totals.maybeWrites}; max slackMs ${totals.maxSlackMs}; ` +
      `acquire latency p50 ${percentile(sorted, 0.5)} ms, p99 ${
        percentile(sorted, 0.99)
      } ms; local reserve: ${totals.reserveHistories} histories, ${totals.reserveAdmitted} admitted (${totals.reserveLocal} from slices)`;
  };
  console.log(
    `soak: profile ${args.profile}, seeds ${args.seed}+k, up to ${args.histories} histories or ${args.minutes} min, ${args.parallel} at a time, table ${env.table} on ${endpoint}`,
  );
  const progress = setInterval(
    () => console.log(`progress: ${line()}`),
    15_000,
  );
  const worker = async (): Promise<void> => {
    while (!stop && next < args.histories && Date.now() < deadline) {
      const seed = (args.seed + next++) | 0;
      const [scenario] = fc.sample(arb, { seed, numRuns: 1 });
      let r: HistoryResult;
      try {
        r = await runHistory(env, scenario as NonNullable<typeof scenario>, {
          strict: !args.lenient,
        });
      } catch (e) {
        console.error(`history of seed ${seed} crashed the driver:`, e);
        console.error(`replay: ${replayCommand(seed)}`);
        totals.violations++;
        if (!args.keepGoing) stop = true;
        continue;
      }
      totals.histories++;
      totals.operations += r.stats.operations;
      totals.acquires += r.stats.acquires;
      totals.admitted += r.stats.admitted;
      totals.refused += r.stats.refused;
      totals.errors += r.stats.errors;
      totals.stranded += r.stats.stranded;
      totals.faults += r.stats.faults;
      totals.cachedRefusals += r.stats.cachedRefusals;
      totals.exemptRefusals += r.stats.exemptRefusals;
      totals.known += r.known.length;
      for (const k of r.known) {
        knownKinds.set(kindOf(k), (knownKinds.get(kindOf(k)) ?? 0) + 1);
      }
      totals.maybeWrites += r.stats.maybeWrites;
      totals.clampedLosses += r.stats.clampedLosses;
      totals.maxSlackMs = Math.max(totals.maxSlackMs, r.stats.slackMs);
      totals.overAdmissions += r.stats.overAdmissions;
      totals.envelopes += r.stats.envelopes;
      totals.unjustifiedRefusals += r.report.unjustifiedRefusals.length;
      totals.accounting += r.report.accounting.length;
      totals.violations += r.violations.length;
      latencies.push(...r.acquireLatencies);
      if (!r.ok) {
        failures.push({ seed, result: r });
        console.log(`VIOLATION in the history of seed ${seed}: ${summary(r)}`);
        console.log(r.message);
        console.log(`replay: ${replayCommand(seed)}`);
        if (!args.keepGoing) stop = true;
      }
    }
  };
  // The local reserve's histories (tests/integration/_reserve_history.ts:
  // three limiters with the reserve on sharing buckets, every other one
  // with writes failing before and after they apply) on the same endpoint.
  let reserveNext = 0;
  const reserveWorker = async (): Promise<void> => {
    Deno.env.set("ZAEL_TEST_ENDPOINT", endpoint);
    while (!stop && Date.now() < deadline) {
      const k = reserveNext++;
      const seed = (args.seed + 1_000_000 + k) | 0;
      const faults = k % 2 === 1;
      const r = await reserveHistory({ faults, seed });
      totals.reserveHistories++;
      totals.reserveAdmitted += r.counts.admitted;
      totals.reserveLocal += r.local;
      if (!r.store.ok || !r.caller.ok) {
        totals.violations++;
        console.log(
          `VIOLATION in the local reserve history of seed ${seed}${
            faults ? " (faults)" : ""
          }; replay: deno task soak:reserve -- --seed ${
            faults ? seed - 1 : seed
          } --histories ${faults ? 2 : 1}`,
        );
        if (!r.store.ok) console.log(`store history: ${format(r.store)}`);
        if (!r.caller.ok) console.log(`caller history: ${format(r.caller)}`);
        if (!args.keepGoing) stop = true;
      }
    }
  };
  await Promise.all([
    ...Array.from({ length: args.parallel }, () => worker()),
    ...Array.from({ length: args.reserveLanes }, () => reserveWorker()),
  ]);
  clearInterval(progress);
  console.log(`summary: ${line()}`);
  if (knownKinds.size > 0) {
    console.log(
      `known findings (ignored tests in tests/integration/oracle_test.ts): ${
        [...knownKinds].map(([k, n]) => `${k} ${n}`).join(", ")
      }`,
    );
  }
  if (failures.length > 0) {
    console.log(
      `FAILED: ${failures.length} histories with violations; seeds ${
        failures.map((f) => f.seed).join(", ")
      }`,
    );
    return 1;
  }
  if (totals.violations > 0) return 1;
  console.log("PASSED: no violation");
  return 0;
}
