// deno-lint-ignore-file no-console -- a benchmark child prints one JSON line
/**
 * Child process of `dev/bench_migrations.ts`: applies the migrations to
 * 0.10.0 on one table and prints `{items, seconds, peakRssBytes,
 * sampledPeakRssBytes}` as JSON, so peak memory is measured per run.
 *
 * Usage: `deno run --allow-net=127.0.0.1 --allow-read --allow-env --allow-sys dev/_migrate_child.ts <endpoint> <table>`
 */
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { createMigrationContext } from "../migrations/migration.ts";
import { applyMigrations } from "../migrations/runner.ts";

const [endpoint, table] = Deno.args;
if (!endpoint || !table) {
  console.error("usage: _migrate_child.ts <endpoint> <table>");
  Deno.exit(2);
}

function vmHwmBytes(): number | null {
  try {
    const status = Deno.readTextFileSync("/proc/self/status");
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(status);
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

let sampled = Deno.memoryUsage().rss;
const timer = setInterval(() => {
  sampled = Math.max(sampled, Deno.memoryUsage().rss);
}, 100);

const client = new DynamoDBClient({
  endpoint,
  region: "us-east-1",
  credentials: { accessKeyId: "local", secretAccessKey: "local" },
  maxAttempts: 10,
});
const ctx = createMigrationContext({ client, tableName: table });
const t0 = performance.now();
const result = await applyMigrations(ctx, { to: "0.10.0" });
const seconds = (performance.now() - t0) / 1000;
clearInterval(timer);
sampled = Math.max(sampled, Deno.memoryUsage().rss);
client.destroy();
if (result.kind !== "applied") {
  console.error(`unexpected result: ${result.kind}`);
  Deno.exit(1);
}
const keys = result.steps.find((s) =>
  s.migration.id === "0.10.0-namespace-keys"
);
console.log(JSON.stringify({
  items: keys?.report.scanned ?? 0,
  written: keys?.report.written ?? 0,
  seconds,
  peakRssBytes: vmHwmBytes() ?? sampled,
  sampledPeakRssBytes: sampled,
}));
