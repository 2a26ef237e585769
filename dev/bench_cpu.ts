// deno-lint-ignore-file no-console -- a benchmark prints its figures
/**
 * Part of `deno task bench`: the library's own client CPU per warm acquire.
 * The SDK client's HTTP handler is swapped for an instant one that answers
 * every `UpdateItem` with `200 {}` in-process (no socket, no DynamoDB), so
 * what remains is the library plus the SDK's serialize / sign / parse
 * steps. The baseline is a raw conditional `UpdateItem` through the same
 * client and handler: `acquire − raw` is what the library adds per call.
 * Reads (config, entities) still go to DynamoDB Local, which also serves
 * the warm-up that makes every bucket's state known.
 *
 * Usage: `deno run --allow-net=127.0.0.1 --allow-run=java --allow-read --allow-env --allow-sys dev/bench_cpu.ts [ROOT]`, ROOT a checkout of another
 * build to measure side by side (default: this one only).
 * Environment: `BENCH_MS` (per cell, default 2000), `ROUNDS` (default 3),
 * `CPU_PROFILE` (a path: write a V8 `.cpuprofile` of the measured rounds,
 * for Chrome DevTools; add `--allow-write` for it).
 */
import { Session } from "node:inspector";
import process from "node:process";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { acquireScenarios, type Op, rawBaseline } from "./_bench_setup.ts";
import { startDynamoDbLocal } from "./dynamodb_local.ts";
import { median } from "./_bench_stats.ts";

const MS = Number(Deno.env.get("BENCH_MS") ?? 2000);
const ROUNDS = Number(Deno.env.get("ROUNDS") ?? 3);
const ROOT = new URL("../", import.meta.url).pathname;
const other = Deno.args[0];

interface Handler {
  handle(
    request: unknown,
    options?: unknown,
  ): Promise<{ response: unknown }>;
  destroy?(): void;
  updateHttpClientConfig?(key: never, value: never): void;
  httpHandlerConfigs?(): Record<string, unknown>;
}

const EMPTY = new TextEncoder().encode("{}");

/** A handler that passes everything through to `real`, or answers `UpdateItem` at once when `instant.on`. */
function switchable(real: Handler, instant: { on: boolean }): Handler {
  return {
    handle(request, options) {
      const headers = (request as { headers: Record<string, string> }).headers;
      if (instant.on && headers["x-amz-target"]?.endsWith(".UpdateItem")) {
        return Promise.resolve({
          response: {
            statusCode: 200,
            reason: "OK",
            headers: {
              "content-type": "application/x-amz-json-1.0",
              "content-length": "2",
            },
            body: EMPTY,
          },
        });
      }
      return real.handle(request, options);
    },
    destroy: () => real.destroy?.(),
    updateHttpClientConfig: (k, v) => real.updateHttpClientConfig?.(k, v),
    httpHandlerConfigs: () => real.httpHandlerConfigs?.() ?? {},
  };
}

/**
 * Mean CPU microseconds (user + system, this process) per call of `op`,
 * one call at a time, for `ms` of wall time: CPU time, not wall time, so
 * other processes on a busy machine change it little.
 */
async function microsPerCall(op: Op, ms: number): Promise<number> {
  let n = 0;
  const end = performance.now() + ms;
  const c0 = process.cpuUsage();
  while (performance.now() < end) {
    await op(0);
    n++;
  }
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / n;
}

function post(session: Session, method: string): Promise<unknown> {
  return new Promise((resolve, reject) =>
    session.post(method, (err, out) => err ? reject(err) : resolve(out))
  );
}

const local = await startDynamoDbLocal();
const base = {
  endpoint: local.endpoint,
  region: "us-east-1",
  credentials: { accessKeyId: "local", secretAccessKey: "local" },
};
const plain = new DynamoDBClient(base);
const instant = { on: false };
const client = new DynamoDBClient({
  ...base,
  requestHandler: switchable(
    plain.config.requestHandler as unknown as Handler,
    instant,
  ),
});
try {
  const builds = [{ name: "this build", root: ROOT }];
  if (other) {
    builds.unshift({
      name: other.split("/").pop() ?? other,
      root: other.endsWith("/") ? other : `${other}/`,
    });
  }
  const scenarios: Record<string, Op[]> = {};
  let table = "";
  for (const [i, b] of builds.entries()) {
    const lib = await import(`${b.root}mod.ts`);
    const repo = await lib.Repository.open({
      client,
      stack: `bench-cpu-${i}`,
      provision: true,
    });
    table = repo.tableName;
    for (const [name, op] of await acquireScenarios(lib, repo)) {
      (scenarios[name] ??= []).push(op);
    }
  }
  const raw = await rawBaseline(client, table);
  // Every bucket's state known (and the JIT warm) before the handler goes instant.
  for (const ops of Object.values(scenarios)) {
    for (const op of ops) {
      for (let i = 0; i < 200; i++) await op(0);
    }
  }
  instant.on = true;
  for (const ops of [[raw], ...Object.values(scenarios)]) {
    for (const op of ops) await microsPerCall(op, 500);
  }
  const profile = Deno.env.get("CPU_PROFILE");
  const session = profile ? new Session() : null;
  if (session) {
    session.connect();
    await post(session, "Profiler.enable");
    await post(session, "Profiler.start");
  }
  const rawUs: number[] = [];
  const cells: Record<string, number[][]> = {};
  for (let r = 0; r < ROUNDS; r++) {
    rawUs.push(await microsPerCall(raw, MS));
    for (const [name, ops] of Object.entries(scenarios)) {
      const row = (cells[name] ??= ops.map(() => []));
      for (const [i, op] of ops.entries()) {
        row[i]?.push(await microsPerCall(op, MS));
      }
    }
  }
  if (session && profile) {
    const out = await post(session, "Profiler.stop") as { profile: unknown };
    await Deno.writeTextFile(profile, JSON.stringify(out.profile));
    session.disconnect();
  }
  const r = median(rawUs);
  console.log(
    `\nclient CPU (user + system) per warm acquire, instant in-process transport (UpdateItem answered 200 {}), median of ${ROUNDS} rounds, ${MS} ms per cell`,
  );
  console.log(`raw SDK UpdateItem: ${r.toFixed(0)} µs per call`);
  console.log(
    `scenario    ${
      builds.map((b) => `${b.name.padStart(14)}  x raw`).join("   ")
    }`,
  );
  for (const [name, row] of Object.entries(cells)) {
    console.log(
      `${name.padEnd(10)}  ${
        row.map((xs) => {
          const us = median(xs);
          return `${us.toFixed(0).padStart(11)} µs  ${(us / r).toFixed(2)}`;
        }).join("   ")
      }`,
    );
  }
} finally {
  instant.on = false;
  client.destroy();
  plain.destroy();
  await local.stop();
}
