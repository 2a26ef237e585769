// deno-lint-ignore-file no-console -- a benchmark prints its figures
/**
 * Part of `deno task bench`: the namespace-keys copy side by side with a
 * faithful port of seed 002's script, and against the raw write floor, from
 * one run. Each of the three phases runs on its own fresh DynamoDB Local
 * (one instance slows down as stream records pile up) with an identical
 * legacy table of N items (same PRNG seed, `default` registered: the seed's
 * step 1) and a warm-up of raw puts into a scratch table without a stream
 * (DynamoDB Local's JVM is several times slower cold):
 *
 * 1. Seed 002's script: scan every unprefixed item into a list, then one
 *    conditional PutItem at a time in batches of 25 with a 0.1 s sleep
 *    after each batch (`write_prefixed_items` as written).
 * 2. `copyNamespaceKeys` (`--segments` x `--write-concurrency` writes in
 *    flight, scan included).
 * 3. Raw floor: the same copies, built before the clock starts, put with
 *    `attribute_not_exists(PK)` at the same number in flight; no scan,
 *    nothing else.
 *
 * Prints the three rates and the ratios migrate/seed (target >= 5) and
 * migrate/raw (target >= 0.8), and raw/seed, the most any copy could gain
 * over the seed's script on this endpoint. DynamoDB Local on loopback
 * serves writes nearly one at a time, so raw/seed stays small there;
 * `--latency-ms N` adds N ms to every request of all three phases (a model
 * of DynamoDB's network round trip, where writes in flight overlap).
 *
 * Usage: `deno run --allow-net=127.0.0.1 --allow-run=java --allow-read --allow-env --allow-sys dev/bench_write_floor.ts [--items N] [--latency-ms N] [--segments N] [--write-concurrency N]`
 */
import { parseArgs } from "node:util";
import {
  CreateTableCommand,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  ScanCommand,
} from "@aws-sdk/client-dynamodb";
import { systemClock } from "../core/clock.ts";
import { createTableInput } from "../core/schema.ts";
import type { Item } from "../core/expr.ts";
import { registerNamespaceRecords } from "../core/namespace_registry.ts";
import { isConditionFailed } from "../core/_sdk_errors.ts";
import {
  createTable,
  legacyEntityItems,
  seedLegacyTable,
} from "../tests/_fixtures/legacy_items.ts";
import { forEachConcurrent } from "../migrations/_dynamo.ts";
import { createMigrationContext } from "../migrations/migration.ts";
import {
  copyNamespaceKeys,
  planItemCopy,
} from "../migrations/v0_10_0_namespace_keys.ts";
import { startDynamoDbLocal } from "./dynamodb_local.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    items: { type: "string", default: Deno.env.get("BENCH_FLOOR_ITEMS") },
    "latency-ms": {
      type: "string",
      default: Deno.env.get("BENCH_FLOOR_LATENCY_MS"),
    },
    segments: { type: "string" },
    "write-concurrency": { type: "string" },
  },
});
const N = Number(flags.items ?? "8000");
const LATENCY_MS = Number(flags["latency-ms"] ?? "0");
const SEGMENTS = Number(flags.segments ?? "4");
const PER_SEGMENT = Number(flags["write-concurrency"] ?? "8");
const INFLIGHT = SEGMENTS * PER_SEGMENT;

function makeClient(endpoint: string, latencyMs: number): DynamoDBClient {
  const client = new DynamoDBClient({
    endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
    maxAttempts: 10,
  });
  if (latencyMs > 0) {
    client.middlewareStack.add(
      (next) => async (args) => {
        await new Promise((r) => setTimeout(r, latencyMs));
        return next(args);
      },
      { step: "finalizeRequest", name: "benchLatency" },
    );
  }
  return client;
}

/** Seed 002's `is_unprefixed`. */
function isUnprefixed(pk: string): boolean {
  const slash = pk.indexOf("/");
  const hash = pk.indexOf("#");
  if (slash < 0) return true;
  return hash >= 0 && slash > hash;
}

/** Seed 002's `build_new_item` (GSI4SK is the new PK for every item). */
function buildNewItem(item: Item, ns: string): Item {
  const out: Item = { ...item };
  const pk = `${ns}/${item["PK"]?.S ?? ""}`;
  out["PK"] = { S: pk };
  for (const a of ["GSI1PK", "GSI2PK", "GSI3PK"]) {
    const v = item[a]?.S;
    if (v !== undefined) out[a] = { S: `${ns}/${v}` };
  }
  out["GSI4PK"] = { S: ns };
  out["GSI4SK"] = { S: pk };
  return out;
}

/**
 * Seed 002's `migrate()` without `--delete`: registry lookup, a scan of
 * every unprefixed item into memory, then `write_prefixed_items` (sequential
 * conditional puts, batches of 25, `asyncio.sleep(0.1)` after each batch).
 */
async function seedScript(client: DynamoDBClient, table: string) {
  const reg = await client.send(
    new GetItemCommand({
      TableName: table,
      Key: { PK: { S: "_/SYSTEM#" }, SK: { S: "#NAMESPACE#default" } },
    }),
  );
  const ns = reg.Item?.["namespace_id"]?.S;
  if (ns === undefined) throw new Error("Default namespace not found");
  const items: Item[] = [];
  let start: Item | undefined;
  do {
    const r = await client.send(
      new ScanCommand({
        TableName: table,
        ...(start ? { ExclusiveStartKey: start } : {}),
      }),
    );
    for (const it of r.Items ?? []) {
      if (isUnprefixed(it["PK"]?.S ?? "")) items.push(it);
    }
    start = r.LastEvaluatedKey;
  } while (start);
  let written = 0;
  for (let i = 0; i < items.length; i += 25) {
    for (const item of items.slice(i, i + 25)) {
      const sk = item["SK"]?.S ?? "";
      const target = (item["PK"]?.S ?? "").startsWith("SYSTEM#") &&
          sk === "#VERSION"
        ? "_"
        : ns;
      try {
        await client.send(
          new PutItemCommand({
            TableName: table,
            Item: buildNewItem(item, target),
            ConditionExpression: "attribute_not_exists(PK)",
          }),
        );
        written++;
      } catch (e) {
        if (!isConditionFailed(e)) throw e;
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { scanned: items.length, written };
}

async function legacyCopies(
  client: DynamoDBClient,
  table: string,
  ns: string,
): Promise<Item[]> {
  const out: Item[] = [];
  let start: Item | undefined;
  do {
    const r = await client.send(
      new ScanCommand({
        TableName: table,
        ...(start ? { ExclusiveStartKey: start } : {}),
      }),
    );
    for (const it of r.Items ?? []) {
      const d = planItemCopy(it, ns);
      if (d.kind === "copy" && d.type !== "version") out.push(d.item);
    }
    start = r.LastEvaluatedKey;
  } while (start);
  return out;
}

async function rawPuts(
  client: DynamoDBClient,
  table: string,
  items: readonly Item[],
  inflight: number,
): Promise<number> {
  const t0 = performance.now();
  await forEachConcurrent(
    items,
    inflight,
    new AbortController().signal,
    async (item) => {
      await client.send(
        new PutItemCommand({
          TableName: table,
          Item: item,
          ConditionExpression: "attribute_not_exists(PK)",
        }),
      );
    },
  );
  return (performance.now() - t0) / 1000;
}

/**
 * One measured phase on its own fresh DynamoDB Local: an identical legacy
 * table (same PRNG seed, `default` registered), a warm-up of raw puts into
 * a scratch table without a stream, then `fn`. DynamoDB Local slows down
 * as stream records pile up, so phases sharing one instance would be
 * measured under different conditions.
 */
async function phase<T>(
  fn: (client: DynamoDBClient, table: string) => Promise<T>,
): Promise<T> {
  await using local = await startDynamoDbLocal();
  const setup = makeClient(local.endpoint, 0);
  const client = makeClient(local.endpoint, LATENCY_MS);
  try {
    await createTable(setup, TABLE);
    await seedLegacyTable(setup, TABLE, { items: N, concurrency: 16 });
    await registerNamespaceRecords(
      { client: setup, table: TABLE, clock: systemClock },
      "default",
    );
    const scratch = { ...createTableInput("warm-up") };
    delete scratch.StreamSpecification;
    await setup.send(new CreateTableCommand(scratch));
    const warm: Item[] = [];
    for (let i = 0; warm.length < WARM_UP; i++) {
      warm.push(...legacyEntityItems({ id: `w${i}`, resources: ["api"] }));
    }
    await rawPuts(client, "warm-up", warm, INFLIGHT);
    return await fn(client, TABLE);
  } finally {
    client.destroy();
    setup.destroy();
  }
}

const TABLE = "bench-legacy";
const WARM_UP = 5000;
console.log(
  `\nnamespace-keys copy vs seed 002's script vs raw conditional PutItem (${N} legacy items, identical tables, each phase on a fresh DynamoDB Local after ${WARM_UP} warm-up writes; ${INFLIGHT} writes in flight = ${SEGMENTS} segments x ${PER_SEGMENT}${
    LATENCY_MS > 0 ? `; +${LATENCY_MS} ms per request` : ""
  })`,
);
const seed = await phase(async (client, table) => {
  const t0 = performance.now();
  const r = await seedScript(client, table);
  return { ...r, seconds: (performance.now() - t0) / 1000 };
});
const migrate = await phase(async (client, table) => {
  const ctx = createMigrationContext({
    client,
    tableName: table,
    segments: SEGMENTS,
    writeConcurrency: PER_SEGMENT,
  });
  const t0 = performance.now();
  const r = await copyNamespaceKeys(ctx);
  return { written: r.written, seconds: (performance.now() - t0) / 1000 };
});
const raw = await phase(async (client, table) => {
  const ns = (await client.send(
    new GetItemCommand({
      TableName: table,
      Key: { PK: { S: "_/SYSTEM#" }, SK: { S: "#NAMESPACE#default" } },
    }),
  )).Item?.["namespace_id"]?.S ?? "rawfloor000";
  // The copies are built before the clock starts: no scan is timed.
  const copies = await legacyCopies(client, table, ns);
  const seconds = await rawPuts(client, table, copies, INFLIGHT);
  return { written: copies.length, seconds };
});

const seedRate = seed.written / seed.seconds;
const migrateRate = migrate.written / migrate.seconds;
const rawRate = raw.written / raw.seconds;
const f = (n: number): string => n.toFixed(0).padStart(6);
console.log(
  `seed 002 script : ${f(seedRate)} items/s (${seed.written} written in ${
    seed.seconds.toFixed(1)
  } s, scan included, 1 in flight, 0.1 s pause per 25)`,
);
console.log(
  `migrate apply   : ${f(migrateRate)} items/s (${migrate.written} written in ${
    migrate.seconds.toFixed(1)
  } s, scan included)`,
);
console.log(
  `raw PutItem     : ${f(rawRate)} items/s (${raw.written} in ${
    raw.seconds.toFixed(1)
  } s, no scan, ${INFLIGHT} in flight)`,
);
const vsSeed = migrateRate / seedRate;
const vsRaw = migrateRate / rawRate;
console.log(
  `migrate/seed ${vsSeed.toFixed(2)}x (target >= 5x: ${
    vsSeed >= 5 ? "met" : "NOT met"
  }); migrate/raw ${vsRaw.toFixed(2)}x (target >= 0.8x: ${
    vsRaw >= 0.8 ? "met" : "NOT met"
  }); raw/seed ${
    (rawRate / seedRate).toFixed(2)
  }x is the most any copy could gain over the seed here`,
);
