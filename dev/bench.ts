// deno-lint-ignore-file no-console -- a benchmark prints its figures
/**
 * `deno task bench`: acquire throughput and latency on DynamoDB Local against
 * a raw conditional UpdateItem baseline on the same DynamoDB Local.
 *
 * Scenarios: one limit, two limits, cascade (child + parent), each at
 * concurrency 1 and 32, warm caches, buckets far from empty. Each worker has
 * its own entity (as separate API keys would). Prints ops/s, p50/p99, the
 * acquire/raw throughput ratio, and the stored format's floor: the same
 * writes replayed straight through the SDK (`formatFloor`), so a row shows
 * how much of the gap to raw is DynamoDB's work on the bucket item and how
 * much is the library's. `BENCH_ROWS=strict` runs only these.
 *
 * Then the local reserve rows at concurrency 32 (one limit and cascade with
 * a key per worker, one hot key shared by two limiters), each against strict
 * one limit measured just before: decisions/s, DynamoDB calls per decision,
 * tokens held in slices at stop, tokens stranded at close, false refusals.
 * `BENCH_ROWS=reserve` runs only those.
 *
 * Hot key: one bucket, 32 concurrent callers in one process, with
 * coalescing (the default) and in strict mode (every decision written),
 * against the raw conditional `UpdateItem` on one item of the same table
 * at the same concurrency; then 4 processes x 32 (`deno run` children).
 * Prints decisions/s, the ratio to the raw one-item rate and the DynamoDB
 * calls per decision. `BENCH_ROWS=hot` runs only these rows.
 *
 * Saturated rows (`dev/_bench_saturated.ts`; `BENCH_ROWS=saturated` runs
 * only these): limits that bind (a hot key, the demo's cascade with
 * adjust, a hot key on the local reserve), checked against the ideal
 * bucket's envelope: over-admitted tokens, which must be 0. The rows above
 * use limits no run comes near (10^9 a minute): nothing there can be
 * over-admitted.
 */
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import {
  acquireScenarios,
  callCounter,
  formatFloors,
  hotKey,
  type Op,
  rawBaseline,
  reserveRows,
} from "./_bench_setup.ts";
import { overAdmitted, saturatedRows } from "./_bench_saturated.ts";
import { startDynamoDbLocal } from "./dynamodb_local.ts";
import {
  Limit,
  RateLimiter,
  RateLimiterUnavailable,
  RateLimitExceeded,
  Repository,
} from "../mod.ts";

const DURATION_MS = Number(Deno.env.get("BENCH_MS") ?? 4000);
const CONCURRENCIES = [1, 32];
/** `strict`, `reserve`, `hot` or `saturated`: only those rows (a quick look while others work). */
const ONLY = Deno.env.get("BENCH_ROWS");

interface Result {
  n: number;
  ops: number;
  p50: number;
  p99: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[
    Math.min(sorted.length - 1, Math.floor(sorted.length * p))
  ] as number;
}

async function measure(
  concurrency: number,
  op: (worker: number) => Promise<unknown>,
  ms = DURATION_MS,
): Promise<Result> {
  const latencies: number[] = [];
  const end = performance.now() + ms;
  const start = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async (_, w) => {
    while (performance.now() < end) {
      const t = performance.now();
      await op(w);
      latencies.push(performance.now() - t);
    }
  }));
  const elapsed = (performance.now() - start) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    n: latencies.length,
    ops: latencies.length / elapsed,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
  };
}

const external = Deno.env.get("ZAEL_ENDPOINT_URL");
const local = external ? null : await startDynamoDbLocal();
const client = new DynamoDBClient({
  endpoint: external ?? local?.endpoint ?? "",
  region: "us-east-1",
  credentials: { accessKeyId: "local", secretAccessKey: "local" },
});
const extra: DynamoDBClient[] = [];
/** Rows some of whose acquires failed: reported, and the run exits non-zero, after every row ran. */
const failedRows: string[] = [];
try {
  const repo = await Repository.open({
    client,
    stack: "zae-limiter-bench",
    provision: true,
  });
  const scenarios = await acquireScenarios({ Limit, RateLimiter }, repo);
  const raw = await rawBaseline(client, repo.tableName);
  const floors = await formatFloors(client, scenarios, 32);
  // Warm the JVM and every cache (config, entity, buckets) before measuring.
  console.log("warming up DynamoDB Local and caches...");
  await measure(32, raw, 3000);
  for (const [, op] of scenarios) await measure(32, op, 2000);

  const counted = () => {
    const c = new DynamoDBClient({
      endpoint: external ?? local?.endpoint ?? "",
      region: "us-east-1",
      credentials: { accessKeyId: "local", secretAccessKey: "local" },
    });
    let n = 0;
    c.middlewareStack.add((next) => (args) => {
      n++;
      return next(args);
    }, { step: "initialize", name: "benchCount" });
    extra.push(c);
    return { client: c, calls: () => n };
  };
  const strictRows = async (): Promise<void> => {
    console.log(
      `\nzae-limiter bench on DynamoDB Local, ${
        DURATION_MS / 1000
      } s per row\n`,
    );
    console.log(
      "scenario        conc     ops/s    p50 ms   p99 ms   raw ops/s  acquire/raw  floor ops/s  floor/raw  acquire/floor",
    );
    for (const c of CONCURRENCIES) {
      for (const [name, op] of scenarios) {
        // Measure the baseline right before and after each row; use the mean, so JVM drift affects both sides.
        const before = await measure(c, raw, DURATION_MS / 2);
        const r = await measure(c, op);
        const after = await measure(c, raw, DURATION_MS / 2);
        const floor = await measure(c, floors.get(name) ?? raw);
        const base = (before.ops + after.ops) / 2;
        console.log(
          `${name.padEnd(15)} ${String(c).padStart(4)} ${
            r.ops.toFixed(0).padStart(9)
          } ${r.p50.toFixed(2).padStart(9)} ${r.p99.toFixed(2).padStart(8)} ${
            base.toFixed(0).padStart(11)
          } ${(r.ops / base).toFixed(2).padStart(12)} ${
            floor.ops.toFixed(0).padStart(12)
          } ${(floor.ops / base).toFixed(2).padStart(10)} ${
            (r.ops / floor.ops).toFixed(2).padStart(14)
          }`,
        );
      }
    }
    const rawOne = await measure(1, raw);
    console.log(
      `\nraw conditional UpdateItem, concurrency 1: ${
        rawOne.ops.toFixed(0)
      } ops/s, p50 ${rawOne.p50.toFixed(2)} ms`,
    );
  };

  /**
   * Local reserve rows at concurrency 32 against strict one limit measured
   * right before each: decisions/s, DynamoDB calls per decision, tokens
   * held in slices when the load stopped (what a crash would strand),
   * tokens not given back at close, and refusals (limits are far from
   * exhausted: every refusal is false).
   */
  const reserveTable = async (): Promise<void> => {
    const strict = scenarios.find(([n]) => n === "one limit")?.[1];
    if (!strict) throw new Error("no strict one-limit scenario");
    const rows = await reserveRows(
      {
        Limit,
        RateLimiter,
        RateLimitExceeded,
        RateLimiterUnavailable,
        Repository,
      },
      repo,
      counted,
    );
    console.log(
      `\nlocal reserve, concurrency 32, ${DURATION_MS / 1000} s per row\n`,
    );
    console.log(
      "scenario              decisions/s  calls/decision  decisions/call  held at stop  stranded  false refusals  failed  vs strict one limit",
    );
    for (const r of rows) {
      const base = await measure(32, strict);
      await measure(32, r.op, 1000); // warm: caches, first slices
      r.reset();
      const m = await measure(32, r.op);
      const f = await r.finish();
      // A failed acquire (RateLimiterUnavailable) is counted, not fatal: the other rows still run.
      if (f.failed > 0) failedRows.push(`${r.name}: ${f.failed} failed`);
      console.log(
        `${r.name.padEnd(21)} ${m.ops.toFixed(0).padStart(12)} ${
          (f.calls / f.decisions).toFixed(3).padStart(15)
        } ${(f.decisions / Math.max(1, f.calls)).toFixed(1).padStart(15)} ${
          f.heldAtStop.toFixed(0).padStart(13)
        } ${f.stranded.toFixed(0).padStart(9)} ${
          String(f.refusals).padStart(15)
        } ${String(f.failed).padStart(7)} ${
          (r.paced ? "paced" : (m.ops / base.ops).toFixed(2)).padStart(20)
        }`,
      );
    }
  };
  const saturated = async (): Promise<void> => {
    const rows = await saturatedRows(
      { Limit, RateLimiter, RateLimitExceeded, Repository },
      repo,
      counted,
    );
    console.log(
      `\nsaturated rows (limits that bind), checked against the ideal bucket's envelope, ${
        DURATION_MS / 1000
      } s per row\n`,
    );
    console.log(
      "scenario                   decisions/s  admitted  refused  calls/decision  over-admitted tokens",
    );
    for (const r of rows) {
      const f = await r.run(DURATION_MS);
      console.log(
        `${r.name.padEnd(26)} ${
          (f.decisions / f.seconds).toFixed(0).padStart(11)
        } ${String(f.admitted).padStart(9)} ${
          String(f.decisions - f.admitted).padStart(8)
        } ${(f.calls / f.decisions).toFixed(3).padStart(15)} ${
          String(overAdmitted(f)).padStart(21)
        }`,
      );
    }
  };
  if (ONLY === undefined || ONLY === "strict") await strictRows();
  if (ONLY === undefined || ONLY === "reserve") await reserveTable();
  if (ONLY === undefined || ONLY === "hot") {
    await hotKeyRows(repo, raw, external ?? local?.endpoint ?? "");
  }
  if (ONLY === undefined || ONLY === "saturated") await saturated();
} finally {
  for (const c of extra) c.destroy();
  client.destroy();
  await local?.stop();
}
if (failedRows.length > 0) {
  console.error(`\nrows with failed acquires: ${failedRows.join("; ")}`);
  Deno.exit(1);
}

async function hotKeyRows(
  repo: Repository,
  raw: Op,
  endpoint: string,
): Promise<void> {
  const calls = callCounter(client);
  const rawHot: Op = () => raw(0);
  const modes: [string, Op][] = [
    ["coalesced", hotKey({ RateLimiter }, repo, true)],
    ["strict", hotKey({ RateLimiter }, repo, false)],
  ];
  for (const [, op] of modes) await measure(32, op, 1000);
  console.log(
    `\nhot key: one bucket, 32 callers in one process, ${
      DURATION_MS / 1000
    } s per row (raw: conditional UpdateItem on one item, 32 concurrent)\n`,
  );
  console.log(
    "mode          decisions/s   p50 ms   p99 ms  raw 1-item/s  hot/raw  calls/decision",
  );
  for (const [name, op] of modes) {
    const before = await measure(32, rawHot, DURATION_MS / 2);
    const c0 = calls.count;
    const r = await measure(32, op);
    const used = calls.count - c0;
    const after = await measure(32, rawHot, DURATION_MS / 2);
    const base = (before.ops + after.ops) / 2;
    console.log(
      `${name.padEnd(12)} ${r.ops.toFixed(0).padStart(12)} ${
        r.p50.toFixed(2).padStart(8)
      } ${r.p99.toFixed(2).padStart(8)} ${base.toFixed(0).padStart(13)} ${
        (r.ops / base).toFixed(2).padStart(8)
      } ${(used / r.n).toFixed(3).padStart(15)}`,
    );
  }
  console.log(
    "\nhot key: 4 processes x 32 callers (deno run children), same bucket\n",
  );
  console.log(
    "mode          decisions/s  raw 1-item/s  hot/raw  calls/decision",
  );
  const rawMulti = await processes(endpoint, repo.tableName, "raw");
  for (const mode of ["coalesced", "strict"]) {
    const r = await processes(endpoint, repo.tableName, mode);
    console.log(
      `${mode.padEnd(12)} ${r.rate.toFixed(0).padStart(12)} ${
        rawMulti.rate.toFixed(0).padStart(13)
      } ${(r.rate / rawMulti.rate).toFixed(2).padStart(8)} ${
        (r.calls / r.n).toFixed(3).padStart(15)
      }`,
    );
  }
}

/** Runs 4 child processes of 32 callers at once; their summed rate and calls. */
async function processes(
  endpoint: string,
  table: string,
  mode: string,
): Promise<{ rate: number; n: number; calls: number }> {
  const child = new URL("./_bench_hot_child.ts", import.meta.url).pathname;
  const startAt = Date.now() + 4000;
  const outs = await Promise.all(
    Array.from({ length: 4 }, () =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-net=127.0.0.1",
          "--allow-read",
          "--allow-env",
          "--allow-sys",
          child,
          endpoint,
          table,
          mode,
          String(startAt),
          String(DURATION_MS),
        ],
        stdout: "piped",
      }).output()),
  );
  let n = 0;
  let calls = 0;
  let seconds = 0;
  for (const o of outs) {
    if (!o.success) throw new Error(`a ${mode} child process failed`);
    const r = JSON.parse(new TextDecoder().decode(o.stdout).trim()) as {
      n: number;
      calls: number;
      seconds: number;
    };
    n += r.n;
    calls += r.calls;
    seconds = Math.max(seconds, r.seconds);
  }
  return { rate: n / seconds, n, calls };
}
