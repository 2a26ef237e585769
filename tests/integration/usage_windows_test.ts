/**
 * Usage snapshots of windows that start together (hour 00 is its day's
 * key, day 1 its month's) on DynamoDB Local: the aggregator runs over
 * stream records whose creation time is at hour 00 (the window comes from
 * the record's time, so this runs at any time of day), its effects are
 * committed as the stream worker commits them (one transaction per batch),
 * and the hourly, daily and monthly totals read back through the public
 * reader, by entity and by resource, equal a model of the records; so do
 * the items as a Python 0.10 client reads them (`window`/`window_start`
 * attributes, every other number a counter).
 */
import assert from "node:assert/strict";
import {
  type AttributeValue,
  PutItemCommand,
  QueryCommand,
  TransactWriteItemsCommand,
} from "@aws-sdk/client-dynamodb";
import { pkEntity, skUsage } from "../../core/keys.ts";
import { SNAPSHOT_WINDOWS, windowKey } from "../../core/usage.ts";
import type { Repository } from "../../mod.ts";
import type { StreamRecord } from "../../workers/stream_source.ts";
import { createAggregatorWorkload } from "../../workers/aggregator.ts";
import { readItem } from "../_py010_reader.ts";
import { freshRepo } from "./_harness.ts";
import { waitFor } from "./_workers.ts";

type Image = Record<string, AttributeValue>;
type Window = typeof SNAPSHOT_WINDOWS[number];
/** window -> window start -> [rpm tokens, events]. */
type Totals = Record<string, Record<string, [number, number]>>;

const RESOURCE = "gpt-4";

function image(ns: string, entity: string, tc: number): Image {
  const img: Image = {
    PK: { S: `${ns}/BUCKET#${entity}#${RESOURCE}#0` },
    SK: { S: "#STATE" },
    "entity_id": { S: entity },
    resource: { S: RESOURCE },
    rf: { N: "1000" },
  };
  for (const name of ["rpm", "wcu"]) {
    img[`b_${name}_tk`] = { N: "0" };
    img[`b_${name}_tc`] = { N: String(tc) };
    img[`b_${name}_cp`] = { N: "100000000" };
    img[`b_${name}_ra`] = { N: "100000000" };
    img[`b_${name}_rp`] = { N: "60000" };
  }
  return img;
}

let seq = 0;
/** A stream record of an acquire of `tokens` rpm at `at` (the record's creation time). */
function acquire(
  ns: string,
  entity: string,
  before: number,
  tokens: number,
  at: number,
): StreamRecord {
  const oldImage = image(ns, entity, before * 1000);
  const newImage = image(ns, entity, (before + tokens) * 1000);
  seq++;
  return {
    eventId: `ev${seq}`,
    eventName: "MODIFY",
    sequenceNumber: String(seq).padStart(21, "0"),
    approximateCreationTime: at,
    sizeBytes: 100,
    keys: { PK: newImage["PK"] as AttributeValue, SK: { S: "#STATE" } },
    newImage,
    oldImage,
  };
}

const ctx = {
  signal: new AbortController().signal,
  shardId: "s1",
  leaseEpoch: 1,
  attempt: 1,
};

/** Runs the aggregator over each batch and commits its effects in one transaction, as the worker does. */
async function aggregate(
  env: { repo: Repository; client: { send(c: unknown): Promise<unknown> } },
  batches: StreamRecord[][],
  windows: readonly Window[] = SNAPSHOT_WINDOWS,
): Promise<void> {
  const agg = createAggregatorWorkload({
    tableName: env.repo.tableName,
    windows,
  });
  for (const batch of batches) {
    const out = await agg.handle(batch, ctx);
    assert.deepEqual(out?.rejected ?? [], []);
    const effects = out?.effects ?? [];
    assert.ok(effects.length > 0 && effects.length <= 100);
    await env.client.send(
      new TransactWriteItemsCommand({ TransactItems: [...effects] }),
    );
  }
}

async function read(
  repo: Repository,
  filter: { entityId?: string; resource?: string },
  window: Window,
): Promise<Record<string, [number, number]>> {
  const { snapshots, more } = await repo.getUsageSnapshots({
    ...filter,
    windowType: window,
    ...(filter.entityId !== undefined ? { consistent: true } : {}),
  });
  assert.equal(more, false);
  const out: Record<string, [number, number]> = {};
  for (const s of snapshots) {
    assert.equal(s.windowType, window);
    assert.equal(
      out[s.windowStart],
      undefined,
      `one ${window} ${s.windowStart}`,
    );
    out[s.windowStart] = [s.counters["rpm"] ?? 0, s.totalEvents];
  }
  return out;
}

Deno.test("hour 00 and day 1: every window's usage snapshot reads back its exact count, by entity, by resource and as the Python client reads it", async () => {
  await using env = await freshRepo();
  const ns = env.repo.namespaceId;
  const t = (iso: string) => Date.parse(iso);
  // Day 1 hour 00 (hourly, daily and monthly start together), day 15 hour
  // 00 (hourly and daily), ordinary hours, and the instants either side of
  // midnight.
  const times = [
    "2024-01-31T23:59:59Z",
    "2024-02-01T00:00:00Z",
    "2024-02-01T00:17:00Z",
    "2024-02-01T00:59:59Z",
    "2024-02-01T01:00:00Z",
    "2024-02-01T13:30:00Z",
    "2024-02-14T23:10:00Z",
    "2024-02-15T00:00:01Z",
    "2024-02-15T00:45:00Z",
    "2024-02-15T09:00:00Z",
    "2024-03-01T00:30:00Z",
  ];
  const model: Totals = { hourly: {}, daily: {}, monthly: {} };
  const records: StreamRecord[] = [];
  let tc = 0;
  times.forEach((iso, i) => {
    for (const entity of ["e1", "e2"]) {
      const tokens = 1 + ((i * 7 + entity.length) % 5);
      records.push(acquire(ns, entity, tc, tokens, t(iso)));
      if (entity === "e1") {
        for (const w of SNAPSHOT_WINDOWS) {
          const k = windowKey(w, t(iso));
          const [n, e] = model[w]?.[k] ?? [0, 0];
          (model[w] as Record<string, [number, number]>)[k] = [
            n + tokens,
            e + 1,
          ];
        }
      }
    }
    tc += 10;
  });
  // Three batches: items are created by one and added to by the next.
  await aggregate(env, [
    records.slice(0, 7),
    records.slice(7, 15),
    records.slice(15),
  ]);

  for (const w of SNAPSHOT_WINDOWS) {
    assert.deepEqual(
      await read(env.repo, { entityId: "e1" }, w),
      model[w],
      `${w} by entity`,
    );
    assert.deepEqual(
      await read(env.repo, { entityId: "e1", resource: RESOURCE }, w),
      model[w],
      `${w} by entity and resource`,
    );
    // GSI2 (by resource) is eventually consistent.
    let byResource: Record<string, [number, number]> = {};
    await waitFor(`${w} by resource`, async () => {
      const all = await env.repo.getUsageSnapshots({
        resource: RESOURCE,
        windowType: w,
      });
      byResource = {};
      for (const s of all.snapshots.filter((s) => s.entityId === "e1")) {
        assert.equal(byResource[s.windowStart], undefined);
        byResource[s.windowStart] = [s.counters["rpm"] ?? 0, s.totalEvents];
      }
      return JSON.stringify(byResource) === JSON.stringify(model[w]);
    }, 10_000).catch(() => {});
    assert.deepEqual(byResource, model[w], `${w} by resource`);
  }

  // As a Python 0.10 client reads them: every #USAGE# item of the entity,
  // labeled by its window attribute, with no attribute it does not know.
  const items = (await env.client.send(
    new QueryCommand({
      TableName: env.repo.tableName,
      ConsistentRead: true,
      KeyConditionExpression: "PK = :pk AND begins_with(SK, :sk)",
      ExpressionAttributeValues: {
        ":pk": { S: pkEntity(ns, "e1") },
        ":sk": { S: "#USAGE#" },
      },
    }),
  )).Items ?? [];
  const python: Totals = { hourly: {}, daily: {}, monthly: {} };
  for (const item of items) {
    const r = readItem(item, { config: [], bucket: [] });
    assert.equal(r.type, "usage");
    assert.deepEqual(r.issues, [], JSON.stringify(item));
    const w = item["window"]?.S ?? "";
    const start = item["window_start"]?.S ?? "";
    assert.equal(python[w]?.[start], undefined, `one ${w} ${start}`);
    (python[w] as Record<string, [number, number]>)[start] = [
      Number(item["rpm"]?.N),
      Number(item["total_events"]?.N),
    ];
  }
  assert.deepEqual(python, model);
  // The shared items are the coarsest window's; the finer ones have their own.
  const skOf = new Map(items.map((i) => [i["SK"]?.S, i["window"]?.S]));
  const sk = (key: string) => skUsage(RESOURCE, key);
  assert.equal(skOf.get(sk("2024-02-01T00:00:00Z")), "monthly");
  assert.equal(skOf.get(`${sk("2024-02-01T00:00:00Z")}#daily`), "daily");
  assert.equal(skOf.get(`${sk("2024-02-01T00:00:00Z")}#hourly`), "hourly");
  assert.equal(skOf.get(sk("2024-02-15T00:00:00Z")), "daily");
  assert.equal(skOf.get(`${sk("2024-02-15T00:00:00Z")}#hourly`), "hourly");
  assert.equal(skOf.get(sk("2024-02-15T09:00:00Z")), "hourly");
  assert.equal(
    items.length,
    SNAPSHOT_WINDOWS.reduce(
      (n, w) => n + Object.keys(model[w] ?? {}).length,
      0,
    ),
    "one item per window and window start",
  );
});

Deno.test("a table the Python aggregator wrote: its hour 00 item (labeled hourly, counted once per window) reads as hourly, doubled, until this aggregator adds to it: then it reads as the day and the hour gets its own item", async () => {
  await using env = await freshRepo();
  const ns = env.repo.namespaceId;
  const key = "2024-02-15T00:00:00Z";
  // The reference with windows hourly,daily: both increments of 3 tokens
  // added to the one item, labeled by the first window written (hourly).
  await env.client.send(
    new PutItemCommand({
      TableName: env.repo.tableName,
      Item: {
        PK: { S: pkEntity(ns, "old") },
        SK: { S: skUsage(RESOURCE, key) },
        "entity_id": { S: "old" },
        resource: { S: RESOURCE },
        window: { S: "hourly" },
        "window_start": { S: key },
        rpm: { N: "6" },
        "total_events": { N: "2" },
        GSI2PK: { S: `${ns}/RESOURCE#${RESOURCE}` },
        GSI2SK: { S: `USAGE#${key}#old` },
        GSI4PK: { S: ns },
        GSI4SK: { S: pkEntity(ns, "old") },
        ttl: { N: "1900000000" },
      },
    }),
  );
  assert.deepEqual(await read(env.repo, { entityId: "old" }, "hourly"), {
    [key]: [6, 2],
  });
  assert.deepEqual(await read(env.repo, { entityId: "old" }, "daily"), {});

  await aggregate(env, [[
    acquire(ns, "old", 0, 4, Date.parse("2024-02-15T00:40:00Z")),
  ]], ["hourly", "daily"]);
  assert.deepEqual(await read(env.repo, { entityId: "old" }, "daily"), {
    [key]: [10, 3],
  });
  assert.deepEqual(await read(env.repo, { entityId: "old" }, "hourly"), {
    [key]: [4, 1],
  });
});
