// deno-lint-ignore-file no-console -- a benchmark prints its figures
/**
 * Part of `deno task bench`: zae-limiter side by side with
 * rate-limiter-flexible's DynamoDB store (`RateLimiterDynamo`, npm
 * `rate-limiter-flexible`) on one DynamoDB Local, with the raw conditional
 * `UpdateItem` on one of our items as the floor.
 *
 * Equal tables: both on-demand with a `NEW_AND_OLD_IMAGES` stream, and
 * rate-limiter-flexible's table carries the same secondary-index load per
 * write as our bucket items (which populate GSI2 projecting ALL and GSI3 and
 * GSI4 keys-only): three GSIs on its `key` attribute, one projecting ALL and
 * two keys-only. Its LSIs cannot be matched (its table has no sort key);
 * bucket items populate none. A last row runs it on its own default table
 * (no stream, no index), for reference.
 *
 * Rows: one limit and two limits (two `RateLimiterDynamo`s consumed
 * together, as its `RateLimiterUnion` does), at concurrency 1 and 32, each
 * worker its own key, limits far from exhausted so every call is admitted.
 * Ours twice: strict (every decision its own conditional write) and with
 * the local reserve on (opt-in: most decisions from slices in memory).
 * Cells alternate round after round and each figure is the median over
 * `ROUNDS`, so load that drifts hits every system alike. DynamoDB calls
 * per decision are counted at the SDK.
 *
 * Environment: `BENCH_MS` (per cell, default 2000), `ROUNDS` (default 3).
 *
 * @module
 */
import {
  CreateTableCommand,
  type CreateTableCommandInput,
  DynamoDB,
  DynamoDBClient,
} from "@aws-sdk/client-dynamodb";
import { RateLimiterDynamo } from "rate-limiter-flexible";
import { acquireScenarios, type Op, rawBaseline } from "./_bench_setup.ts";
import { startDynamoDbLocal } from "./dynamodb_local.ts";
import { Limit, RateLimiter, Repository } from "../mod.ts";
import { median } from "./_bench_stats.ts";

const MS = Number(Deno.env.get("BENCH_MS") ?? 2000);
const ROUNDS = Number(Deno.env.get("ROUNDS") ?? 3);

/** Counts the commands a client sends. */
function counted<
  C extends { middlewareStack: DynamoDBClient["middlewareStack"] },
>(
  client: C,
): { client: C; calls: () => number } {
  let n = 0;
  client.middlewareStack.add((next) => (args) => {
    n++;
    return next(args);
  }, { step: "initialize", name: "benchCount" });
  return { client, calls: () => n };
}

/** rate-limiter-flexible's table: its key schema, with or without our stream and index load. */
function peerTable(name: string, equal: boolean): CreateTableCommandInput {
  const gsi = (i: number, projection: "ALL" | "KEYS_ONLY") => ({
    IndexName: `GSI${i}`,
    KeySchema: [{ AttributeName: "key", KeyType: "HASH" as const }],
    Projection: { ProjectionType: projection },
  });
  return {
    TableName: name,
    BillingMode: "PAY_PER_REQUEST",
    AttributeDefinitions: [{ AttributeName: "key", AttributeType: "S" }],
    KeySchema: [{ AttributeName: "key", KeyType: "HASH" }],
    ...(equal
      ? {
        StreamSpecification: {
          StreamEnabled: true,
          StreamViewType: "NEW_AND_OLD_IMAGES",
        },
        GlobalSecondaryIndexes: [
          gsi(2, "ALL"),
          gsi(3, "KEYS_ONLY"),
          gsi(4, "KEYS_ONLY"),
        ],
      }
      : {}),
  };
}

async function measure(c: number, op: Op, ms: number): Promise<number> {
  let n = 0;
  const end = performance.now() + ms;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: c }, async (_, w) => {
      while (performance.now() < end) {
        await op(w);
        n++;
      }
    }),
  );
  return n / ((performance.now() - t0) / 1000);
}

interface System {
  readonly name: string;
  readonly one: Op;
  readonly two: Op;
  readonly calls: () => number;
}

const local = await startDynamoDbLocal();
const config = {
  endpoint: local.endpoint,
  region: "us-east-1",
  credentials: { accessKeyId: "local", secretAccessKey: "local" },
};
const ours = counted(new DynamoDBClient(config));
const closers: (() => Promise<void>)[] = [];
const peer = counted(new DynamoDB(config));
try {
  const repo = await Repository.open({
    client: ours.client,
    stack: "bench-peers",
    provision: true,
  });
  const scenarios = new Map(
    await acquireScenarios({ Limit, RateLimiter }, repo),
  );
  const raw = await rawBaseline(ours.client, repo.tableName);
  const peers: System[] = [];
  for (const equal of [true, false]) {
    const table = equal ? "rlf-equal" : "rlf-default";
    await peer.client.send(new CreateTableCommand(peerTable(table, equal)));
    const make = (prefix: string) =>
      new RateLimiterDynamo({
        storeClient: peer.client,
        tableName: table,
        tableCreated: true,
        ttlSet: true,
        keyPrefix: prefix,
        points: 1_000_000_000,
        duration: 60,
      });
    const rpm = make("rpm");
    const tpm = make("tpm");
    peers.push({
      name: equal ? "rate-limiter-flexible" : "rlf, its default table",
      one: (w) => rpm.consume(`key-${w}`, 1),
      two: (w) =>
        Promise.all([rpm.consume(`key-${w}`, 1), tpm.consume(`key-${w}`, 100)]),
      calls: peer.calls,
    });
  }
  const zae: System = {
    name: "zae-limiter",
    one: scenarios.get("one limit") as Op,
    two: scenarios.get("two limits") as Op,
    calls: ours.calls,
  };
  // The same limits with the local reserve on (its own limiter, opt-in).
  const reserved = new RateLimiter(repo, { localReserve: { env: {} } });
  const viaReserve = (
    resource: string,
    consume: Record<string, number>,
  ): Op =>
  (w) =>
    reserved.acquire({ entityId: `key-${w}`, resource, consume }, () => {});
  const zaeReserve: System = {
    name: "zae, local reserve",
    one: viaReserve("one", { rpm: 1 }),
    two: viaReserve("two", { rpm: 1, tpm: 100 }),
    calls: ours.calls,
  };
  closers.push(() => reserved.close());
  const systems = [zae, zaeReserve, ...peers];
  console.log("warming up DynamoDB Local and caches...");
  await measure(32, raw, 3000);
  for (const s of systems) {
    await measure(32, s.one, 1500);
    await measure(32, s.two, 1500);
  }
  console.log(
    `\nzae-limiter vs rate-limiter-flexible (RateLimiterDynamo) on DynamoDB Local, decisions/s, median of ${ROUNDS} rounds, ${MS} ms per cell`,
  );
  console.log(
    "limits  conc   raw/s  " +
      systems.map((s) => `${s.name.padStart(24)} (x raw, calls)`).join("  ") +
      "   zae/rlf  reserve/rlf",
  );
  for (const c of [1, 32]) {
    for (const kind of ["one", "two"] as const) {
      const rawRates: number[] = [];
      const rates: number[][] = systems.map(() => []);
      const calls: number[][] = systems.map(() => []);
      for (let r = 0; r < ROUNDS; r++) {
        rawRates.push(await measure(c, raw, MS / 2));
        for (const [i, s] of systems.entries()) {
          const before = s.calls();
          const t0 = performance.now();
          const rate = await measure(c, s[kind], MS);
          const decisions = rate * (performance.now() - t0) / 1000;
          rates[i]?.push(rate);
          calls[i]?.push((s.calls() - before) / decisions);
        }
        rawRates.push(await measure(c, raw, MS / 2));
      }
      const rawRate = median(rawRates);
      const m = rates.map(median);
      console.log(
        `${kind.padEnd(6)}  ${String(c).padStart(4)}  ${
          rawRate.toFixed(0).padStart(6)
        }  ${
          systems.map((_, i) =>
            `${(m[i] as number).toFixed(0).padStart(24)} (${
              ((m[i] as number) / rawRate).toFixed(2)
            }, ${median(calls[i] as number[]).toFixed(2)})`
          ).join("  ")
        }   ${((m[0] as number) / (m[2] as number)).toFixed(2)}x  ${
          ((m[1] as number) / (m[2] as number)).toFixed(2).padStart(10)
        }x`,
      );
    }
  }
} finally {
  for (const close of closers) await close();
  ours.client.destroy();
  peer.client.destroy();
  await local.stop();
}
