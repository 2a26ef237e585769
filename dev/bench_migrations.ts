// deno-lint-ignore-file no-console -- a benchmark prints its figures
/**
 * Part of `deno task bench`: the 0.10.0 namespace-keys migration on
 * DynamoDB Local at 10k and 100k legacy items. Each size gets a fresh
 * DynamoDB Local; the migration runs in a child Deno process
 * (`dev/_migrate_child.ts`) so its peak RSS (VmHWM, or sampled
 * `Deno.memoryUsage().rss` off Linux) is per run. Prints items/s, both
 * peak-RSS figures and their ratio (a streaming migration should stay
 * near 1x for 10x the items).
 *
 * `BENCH_MIGRATION_SIZES=10000,100000` overrides the sizes; `--1m` (or
 * `BENCH_MIGRATION_1M=1` through `deno task bench`) adds a 1,000,000-item
 * run, which takes a long while on DynamoDB Local.
 */
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { startDynamoDbLocal } from "./dynamodb_local.ts";
import {
  createTable,
  seedLegacyTable,
} from "../tests/_fixtures/legacy_items.ts";

const SIZES = (Deno.env.get("BENCH_MIGRATION_SIZES") ?? "10000,100000")
  .split(",").map((s) => Number(s.trim())).filter((n) => n > 0);
// 1M items take a long while on DynamoDB Local: only when asked.
if (
  Deno.args.includes("--1m") || Deno.env.get("BENCH_MIGRATION_1M") === "1"
) SIZES.push(1_000_000);
const SLOW_SECONDS = 240;

interface ChildResult {
  items: number;
  written: number;
  seconds: number;
  peakRssBytes: number;
  sampledPeakRssBytes: number;
}

const mb = (b: number): string => `${(b / 1024 / 1024).toFixed(1)} MB`;

async function runOnce(
  n: number,
): Promise<ChildResult & { seedSeconds: number }> {
  await using local = await startDynamoDbLocal();
  const client = new DynamoDBClient({
    endpoint: local.endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
    maxAttempts: 10,
  });
  const table = `bench-migrate-${n}`;
  const s0 = performance.now();
  try {
    await createTable(client, table);
    await seedLegacyTable(client, table, { items: n, concurrency: 16 });
  } finally {
    client.destroy();
  }
  const seedSeconds = (performance.now() - s0) / 1000;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      "--allow-read",
      "--allow-env",
      "--allow-sys",
      new URL("./_migrate_child.ts", import.meta.url).pathname,
      local.endpoint,
      table,
    ],
    stdout: "piped",
    stderr: "piped",
  });
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) {
    throw new Error(
      `migration child failed (${out.code}): ${
        new TextDecoder().decode(out.stderr)
      }`,
    );
  }
  const last = text.split("\n").at(-1) ?? "{}";
  return { ...(JSON.parse(last) as ChildResult), seedSeconds };
}

console.log(
  `\nmigration 0.10.0 namespace-keys (DynamoDB Local, child process per size)`,
);
const results: { n: number; r: ChildResult }[] = [];
for (const n of SIZES) {
  const r = await runOnce(n);
  results.push({ n, r });
  const rate = r.written / r.seconds; // legacy items migrated per second
  console.log(
    `migrate ${n} items: ${r.written} copies written (${r.items} scanned) in ${
      r.seconds.toFixed(1)
    } s = ${rate.toFixed(0)} items/s; peak RSS ${mb(r.peakRssBytes)} (sampled ${
      mb(r.sampledPeakRssBytes)
    }); seeding took ${r.seedSeconds.toFixed(1)} s`,
  );
  if (r.seconds > SLOW_SECONDS) {
    console.log(
      `  note: ${n} items took over ${SLOW_SECONDS} s on this machine (DynamoDB Local is slow; real DynamoDB is bounded by --max-wcu)`,
    );
  }
}
const small = results[0];
const large = results.at(-1);
if (small && large && small !== large) {
  console.log(
    `peak RSS ratio ${large.n}/${small.n} items: ${
      (large.r.peakRssBytes / small.r.peakRssBytes).toFixed(2)
    }x (${mb(small.r.peakRssBytes)} -> ${mb(large.r.peakRssBytes)})`,
  );
}
