// deno-lint-ignore-file no-console -- the demo's job is to print a summary
/**
 * `deno task start`: the embedded demo. Starts DynamoDB Local (or uses
 * `ZAEL_ENDPOINT_URL`), creates the table, registers a namespace, creates a
 * parent project with stored limits and two API keys that cascade to it,
 * runs about 1,000 concurrent acquires with `rpm` + `tpm` limits and lease
 * adjustments, and prints what happened. A stream worker (usage
 * aggregator) runs alongside, reading the table's stream; at the end the
 * demo prints the usage snapshots it built, which match the admitted
 * acquires exactly.
 */
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
import type { UsageSnapshot } from "../mod.ts";
import { createStreamWorkerMetrics } from "../workers/metrics.ts";
import { createJsonLogger } from "../workers/observability.ts";
import { runWorkerProcess } from "../workers/runtime.ts";
import { DynamoDbLocalError, startDynamoDbLocal } from "./dynamodb_local.ts";
import { Limit, RateLimiter, RateLimitExceeded, Repository } from "../mod.ts";
import { seededRandom } from "./_seeded_random.ts";

const REQUESTS = 1000;
const CONCURRENCY = 50;

/** What a demo run ended with. */
export interface DemoOutcome {
  /** Acquires that failed with anything but `RateLimitExceeded`. */
  readonly errors: number;
  /** Admitted acquires. */
  readonly admitted: number;
  /** Acquires refused with `RateLimitExceeded`. */
  readonly rejected: number;
  /** Whether the usage snapshots count every admitted acquire exactly once. */
  readonly exact: boolean;
  /** How long the acquires took. */
  readonly seconds: number;
}

/** Why a demo run failed, one message per reason; empty when it showed what it should. */
export function demoFailures(o: DemoOutcome): string[] {
  return [
    o.errors > 0 ? `${o.errors} acquires failed with an error` : "",
    o.admitted === 0 ? "no acquire was admitted" : "",
    o.rejected === 0
      ? `no acquire was rejected: ${REQUESTS} requests against 600 rpm on the project should have been refused in part; the acquires took ${
        o.seconds.toFixed(1)
      } s, and the buckets refill meanwhile (a slow endpoint refills them all)`
      : "",
    o.exact ? "" : "the usage snapshots do not match the admitted acquires",
  ].filter((f) => f !== "");
}

async function main(): Promise<number> {
  const external = Deno.env.get("ZAEL_ENDPOINT_URL");
  let local: Awaited<ReturnType<typeof startDynamoDbLocal>> | null = null;
  if (!external) {
    console.log("Starting DynamoDB Local (in memory, loopback)...");
    try {
      local = await startDynamoDbLocal();
    } catch (e) {
      if (e instanceof DynamoDbLocalError) {
        console.error(e.message);
        return 1;
      }
      throw e;
    }
  }
  const stop = async (): Promise<void> => {
    if (local) await local.stop();
  };
  const onSignal = (): void => {
    stop().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const client = new DynamoDBClient({
    endpoint: external ?? local?.endpoint ?? "",
    region: "us-east-1",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
  });
  try {
    const endpoint = external ?? local?.endpoint;
    console.log(`DynamoDB endpoint: ${endpoint}`);
    const admin = await Repository.open({
      client,
      stack: "zae-limiter-demo",
      provision: true,
    });
    // A namespace of its own per run: on an endpoint you run yourself
    // (ZAEL_ENDPOINT_URL), the next run starts from fresh entities and buckets.
    const tenant = `tenant-acme-${Date.now().toString(36)}`;
    const tenantId = await admin.registerNamespace(tenant);
    const repo = await admin.namespace(tenant);
    console.log(
      `Table "${repo.tableName}" ready; namespace "${tenant}" has opaque id ${tenantId}`,
    );

    // The project (parent) holds the shared budget; each API key has its own, and cascades.
    await repo.createEntity("proj-acme", { name: "ACME project" });
    await repo.setLimits("proj-acme", [
      Limit.perMinute("rpm", 600),
      Limit.perMinute("tpm", 60_000),
    ]);
    for (const key of ["key-acme-1", "key-acme-2"]) {
      await repo.createEntity(key, { parentId: "proj-acme", cascade: true });
    }
    await repo.setLimits("key-acme-1", [
      Limit.perMinute("rpm", 400),
      Limit.perMinute("tpm", 40_000),
    ]);
    await repo.setLimits("key-acme-2", [
      Limit.perMinute("rpm", 400),
      Limit.perMinute("tpm", 40_000),
    ]);
    console.log(
      "Limits: proj-acme rpm 600/min, tpm 60000/min; each key rpm 400/min, tpm 40000/min (cascade)",
    );

    // The stream worker, on its own clients (so the call counts below are the limiter's alone).
    const workerClient = new DynamoDBClient({
      endpoint: endpoint ?? "",
      region: "us-east-1",
      credentials: { accessKeyId: "local", secretAccessKey: "local" },
    });
    const streams = new DynamoDBStreamsClient({
      endpoint: endpoint ?? "",
      region: "us-east-1",
      credentials: { accessKeyId: "local", secretAccessKey: "local" },
    });
    const stopWorker = new AbortController();
    const workerMetrics = createStreamWorkerMetrics();
    const workerLogs: string[] = [];
    const worker = runWorkerProcess({
      client: workerClient,
      streamsClient: streams,
      tableName: repo.tableName,
      workloads: ["aggregator"],
      windows: ["hourly", "daily"],
      signal: stopWorker.signal,
      port: null,
      metrics: workerMetrics,
      logger: createJsonLogger({
        level: "warn",
        write: (l) => workerLogs.push(l),
      }),
      tuning: { batchWindowMs: 500, pollIntervalMs: 100, idlePollMaxMs: 500 },
    }).finally(() => {
      workerClient.destroy();
      streams.destroy();
    });
    console.log("Stream worker started (usage aggregator)");

    // DynamoDB Local on a busy machine answers far slower than DynamoDB: a
    // deadline above the 3 s default keeps a slow answer from being an error.
    const limiter = new RateLimiter(repo, { timeoutMs: 15_000 });
    const counts = new Map<string, number>();
    client.middlewareStack.add((next, ctx) => (args) => {
      counts.set(
        String(ctx.commandName),
        (counts.get(String(ctx.commandName)) ?? 0) + 1,
      );
      return next(args);
    }, { step: "initialize", name: "demoCounter" });
    const rand = seededRandom(42);
    const stats = {
      admitted: new Map<string, number>(),
      rejected: new Map<string, number>(),
      tokens: 0,
      firstRetryAfter: null as RateLimitExceeded | null,
      errors: 0,
    };
    let next = 0;
    const started = performance.now();
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next < REQUESTS) {
        const i = next++;
        const key = i % 3 === 0 ? "key-acme-2" : "key-acme-1";
        const estimate = 100;
        const actual = 20 + Math.floor(rand() * 160);
        try {
          await limiter.acquire(
            {
              entityId: key,
              resource: "openai/gpt-4o",
              consume: { rpm: 1, tpm: estimate },
            },
            (lease) => {
              // The "LLM call" used `actual` tokens: reconcile the estimate.
              lease.adjust({ tpm: actual - estimate });
            },
          );
          stats.admitted.set(key, (stats.admitted.get(key) ?? 0) + 1);
          stats.tokens += actual;
        } catch (e) {
          if (e instanceof RateLimitExceeded) {
            stats.rejected.set(key, (stats.rejected.get(key) ?? 0) + 1);
            stats.firstRetryAfter ??= e;
          } else {
            stats.errors++;
            if (stats.errors <= 3) console.error("unexpected error:", e);
          }
        }
      }
    }));
    const seconds = (performance.now() - started) / 1000;
    const admitted = [...stats.admitted.values()].reduce((a, b) => a + b, 0);
    const rejected = [...stats.rejected.values()].reduce((a, b) => a + b, 0);
    console.log("");
    console.log(
      `${REQUESTS} acquires, ${CONCURRENCY} concurrent, in ${
        seconds.toFixed(2)
      } s:`,
    );
    console.log(
      `  admitted ${admitted}, rejected ${rejected}, errors ${stats.errors}`,
    );
    for (const key of ["key-acme-1", "key-acme-2"]) {
      console.log(
        `  ${key}: admitted ${stats.admitted.get(key) ?? 0}, rejected ${
          stats.rejected.get(key) ?? 0
        }`,
      );
    }
    console.log(
      `  DynamoDB calls: ${JSON.stringify(Object.fromEntries(counts))} (${
        ([...counts.values()].reduce((a, b) => a + b, 0) / REQUESTS).toFixed(2)
      } per acquire, commits included)`,
    );
    console.log(
      `  tokens reported by the "model" for admitted requests: ${stats.tokens}`,
    );
    if (stats.firstRetryAfter) {
      const e = stats.firstRetryAfter;
      console.log(
        `  first rejection: ${e.message} (Retry-After: ${e.retryAfterHeader}; limits: ${
          e.violations.map((v) =>
            `${v.entityId}/${v.limitName} ${v.available} left`
          ).join(", ")
        })`,
      );
    }
    console.log("");
    console.log(
      "Remaining capacity (whole tokens; keys include their parent):",
    );
    for (const entityId of ["proj-acme", "key-acme-1", "key-acme-2"]) {
      const avail = await limiter.available({
        entityId,
        resource: "openai/gpt-4o",
      });
      console.log(
        `  ${entityId.padEnd(11)} rpm ${
          String(avail["rpm"]).padStart(5)
        }  tpm ${String(avail["tpm"]).padStart(7)}`,
      );
    }
    const events = await repo.getAuditEvents("key-acme-1");
    console.log(
      `Audit events for key-acme-1: ${events.map((e) => e.action).join(", ")}`,
    );

    // Usage snapshots: wait until the worker has counted every admitted acquire.
    const entities = ["proj-acme", "key-acme-1", "key-acme-2"];
    const wanted = new Map<string, number>([
      ["key-acme-1", stats.admitted.get("key-acme-1") ?? 0],
      ["key-acme-2", stats.admitted.get("key-acme-2") ?? 0],
      ["proj-acme", admitted],
    ]);
    const readSnapshots = async (): Promise<UsageSnapshot[]> => {
      const out: UsageSnapshot[] = [];
      for (const entityId of entities) {
        const { snapshots } = await repo.getUsageSnapshots({
          entityId,
          consistent: true,
        });
        out.push(...snapshots);
      }
      return out;
    };
    // Each acquire takes 1 rpm: the rpm counter counts admitted acquires
    // (totalEvents counts bucket writes, and a coalesced write carries
    // several acquires).
    const counted = (snaps: UsageSnapshot[], id: string): number =>
      snaps.filter((s) => s.entityId === id && s.windowType === "hourly")
        .reduce((a, s) => a + (s.counters["rpm"] ?? 0), 0);
    let snapshots: UsageSnapshot[] = [];
    const waitStart = performance.now();
    while (performance.now() - waitStart < 30_000) {
      snapshots = await readSnapshots();
      if (entities.every((id) => counted(snapshots, id) === wanted.get(id))) {
        break;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    stopWorker.abort();
    await worker;
    console.log("");
    console.log(
      `Usage snapshots built by the stream worker (${workerMetrics.recordsRead} stream records read, ${workerMetrics.commits} commits, ${workerMetrics.deadLetters} dead letters):`,
    );
    for (
      const s of snapshots.sort((a, b) =>
        a.entityId.localeCompare(b.entityId) ||
        a.windowType.localeCompare(b.windowType) ||
        a.windowStart.localeCompare(b.windowStart)
      )
    ) {
      console.log(
        `  ${s.entityId.padEnd(11)} ${
          s.windowType.padEnd(7)
        } ${s.windowStart}  events ${String(s.totalEvents).padStart(4)}  rpm ${
          String(s.counters["rpm"] ?? 0).padStart(4)
        }  tpm ${String(s.counters["tpm"] ?? 0).padStart(6)}`,
      );
    }
    const exact = entities.every((id) =>
      counted(snapshots, id) === wanted.get(id)
    );
    console.log(
      exact
        ? "  = every admitted acquire counted exactly once (tpm includes the adjustments)"
        : `  MISMATCH: expected rpm ${
          JSON.stringify(Object.fromEntries(wanted))
        }`,
    );
    for (const l of workerLogs) console.error(l);
    const failures = demoFailures({
      errors: stats.errors,
      admitted,
      rejected,
      exact,
      seconds,
    });
    for (const f of failures) console.error(`demo failed: ${f}`);
    return failures.length === 0 ? 0 : 1;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    client.destroy();
    await stop();
  }
}

if (import.meta.main) Deno.exit(await main());
