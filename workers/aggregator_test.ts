import assert from "node:assert/strict";
import type { AttributeValue, Update } from "@aws-sdk/client-dynamodb";
import {
  aggregateSnapshots,
  type BucketChange,
  createAggregatorWorkload,
  isBucketWrite,
  parseBucketChange,
  refillUpdate,
} from "./aggregator.ts";
import type { StreamRecord } from "./stream_source.ts";
import type { HandlerContext } from "./batch_processor.ts";

type Image = Record<string, AttributeValue>;

interface LimitState {
  tk: number;
  tc: number;
  cp?: number;
  ra?: number;
  rp?: number;
}

function bucketImage(
  limits: Record<string, LimitState>,
  opts: { pk?: string; rf?: number; entity?: string; extra?: Image } = {},
): Image {
  const img: Image = {
    PK: { S: opts.pk ?? "ns1/BUCKET#e1#gpt-4#0" },
    SK: { S: "#STATE" },
    "entity_id": { S: opts.entity ?? "e1" },
    resource: { S: "gpt-4" },
    rf: { N: String(opts.rf ?? 1_000) },
    ...opts.extra,
  };
  for (const [name, l] of Object.entries(limits)) {
    img[`b_${name}_tk`] = { N: String(l.tk) };
    img[`b_${name}_tc`] = { N: String(l.tc) };
    img[`b_${name}_cp`] = { N: String(l.cp ?? 100_000) };
    img[`b_${name}_ra`] = { N: String(l.ra ?? 100_000) };
    img[`b_${name}_rp`] = { N: String(l.rp ?? 60_000) };
  }
  return img;
}

let seq = 100;
function record(
  eventName: "INSERT" | "MODIFY" | "REMOVE",
  newImage: Image | undefined,
  oldImage?: Image,
  at = Date.parse("2024-01-15T14:30:00Z"),
): StreamRecord {
  const img = newImage ?? oldImage ?? {};
  seq++;
  return {
    eventId: `ev${seq}`,
    eventName,
    sequenceNumber: String(seq).padStart(21, "0"),
    approximateCreationTime: at,
    sizeBytes: 100,
    keys: { PK: img["PK"] ?? { S: "" }, SK: img["SK"] ?? { S: "" } },
    ...(newImage ? { newImage } : {}),
    ...(oldImage ? { oldImage } : {}),
  };
}

const ctx: HandlerContext = {
  signal: new AbortController().signal,
  shardId: "s1",
  leaseEpoch: 1,
  attempt: 1,
};

function change(r: StreamRecord, legacyNs?: string): BucketChange {
  const p = parseBucketChange(r, legacyNs);
  assert.equal(p.kind, "change", p.kind === "skip" ? p.reason : "");
  if (p.kind !== "change") throw new Error("unreachable");
  return p.change;
}

/** Decodes an effect back into (key, counters added, events added). */
function decodeEffect(u: Update): {
  pk: string;
  sk: string;
  added: Record<string, number>;
} {
  const names = u.ExpressionAttributeNames ?? {};
  const values = u.ExpressionAttributeValues ?? {};
  const addPart = (u.UpdateExpression ?? "").split(" ADD ")[1] ?? "";
  const added: Record<string, number> = {};
  for (const clause of addPart.split(", ")) {
    const [n, v] = clause.split(" ");
    // A name without a "#" alias (no reserved word has an underscore) is sent as is.
    added[names[n ?? ""] ?? n ?? "?"] = Number(values[v ?? ""]?.N);
  }
  return { pk: u.Key?.["PK"]?.S ?? "", sk: u.Key?.["SK"]?.S ?? "", added };
}

Deno.test("isBucketWrite: bucket inserts and modifications only; never the reserved namespace", () => {
  const img = bucketImage({ rpm: { tk: 0, tc: 1000 } });
  assert.equal(isBucketWrite(record("MODIFY", img, img)), true);
  assert.equal(isBucketWrite(record("INSERT", img)), true);
  assert.equal(isBucketWrite(record("REMOVE", undefined, img)), false);
  const usage = { PK: { S: "ns1/ENTITY#e1" }, SK: { S: "#USAGE#r#k" } };
  assert.equal(isBucketWrite(record("MODIFY", usage, usage)), false);
  const lease = { PK: { S: "_/STREAM#agg#x" }, SK: { S: "#STATE" } };
  assert.equal(isBucketWrite(record("MODIFY", lease, lease)), false);
});

Deno.test("parseBucketChange: the consumption of a modification, refunds negative, wcu marks the acquire", () => {
  const before = bucketImage({
    rpm: { tk: 9_000, tc: 1_000 },
    tpm: { tk: 90_000, tc: 10_000 },
    wcu: { tk: 999_000, tc: 1_000 },
  });
  const acquire = bucketImage({
    rpm: { tk: 8_000, tc: 2_000 },
    tpm: { tk: 80_000, tc: 20_000 },
    wcu: { tk: 998_000, tc: 2_000 },
  });
  const c = change(record("MODIFY", acquire, before));
  assert.deepEqual([...c.deltas], [["rpm", 1_000n], ["tpm", 10_000n]]);
  assert.equal(c.events, 1);
  assert.deepEqual([c.ns, c.entityId, c.resource, c.shard], [
    "ns1",
    "e1",
    "gpt-4",
    0,
  ]);

  const refund = bucketImage({
    rpm: { tk: 8_000, tc: 2_000 },
    tpm: { tk: 85_000, tc: 15_000 },
    wcu: { tk: 998_000, tc: 2_000 },
  });
  const r = change(record("MODIFY", refund, acquire));
  assert.deepEqual([...r.deltas], [["tpm", -5_000n]]);
  assert.equal(r.events, 0, "an adjustment is not an acquire");
});

Deno.test("parseBucketChange: a bucket's INSERT is counted from zero; a migration copy is not", () => {
  const created = bucketImage({
    rpm: { tk: 99_000, tc: 1_000 },
    wcu: { tk: 999_000, tc: 1_000 },
  });
  const c = change(record("INSERT", created));
  assert.deepEqual([...c.deltas], [["rpm", 1_000n]]);
  assert.equal(c.events, 1);

  const copy = bucketImage({ rpm: { tk: 1, tc: 5_000_000 } }, {
    extra: { "migrated_from": { S: "BUCKET#e1#gpt-4#0" } },
  });
  assert.deepEqual(parseBucketChange(record("INSERT", copy)), {
    kind: "skip",
    reason: "migration_copy",
  });
});

Deno.test("parseBucketChange: unprefixed keys are skipped, or attributed to the legacy namespace; bad keys never throw", () => {
  const legacy = bucketImage({ rpm: { tk: 1, tc: 3_000 } }, {
    pk: "BUCKET#e1#gpt-4#0",
  });
  const old = bucketImage({ rpm: { tk: 2, tc: 2_000 } }, {
    pk: "BUCKET#e1#gpt-4#0",
  });
  assert.deepEqual(parseBucketChange(record("MODIFY", legacy, old)), {
    kind: "skip",
    reason: "unprefixed_key",
  });
  const c = change(record("MODIFY", legacy, old), "nsDefault");
  assert.equal(c.ns, "nsDefault");
  assert.equal(c.legacy, true);
  assert.deepEqual([...c.deltas], [["rpm", 1_000n]]);

  for (
    const pk of ["ns1/BUCKET#", "ns1/BUCKET#e1#r#x", "bad ns!/BUCKET#e#r#0"]
  ) {
    const img = bucketImage({ rpm: { tk: 1, tc: 1 } }, { pk });
    const p = parseBucketChange(record("MODIFY", img, img));
    assert.equal(p.kind, "skip", pk);
  }
  const noEntity = bucketImage({ rpm: { tk: 1, tc: 1 } }, { entity: "" });
  assert.deepEqual(parseBucketChange(record("MODIFY", noEntity, noEntity)), {
    kind: "skip",
    reason: "no_entity",
  });
});

Deno.test("parseBucketChange: the pre-0.9 layout (#BUCKET# sort key) parses as shard 0", () => {
  const img = bucketImage({ rpm: { tk: 1, tc: 2_000 } }, {
    pk: "ns1/ENTITY#e1",
  });
  img["SK"] = { S: "#BUCKET#gpt-4" };
  const old = { ...img, "b_rpm_tc": { N: "1000" } };
  const c = change(record("MODIFY", img, old));
  assert.deepEqual([c.entityId, c.resource, c.shard], ["e1", "gpt-4", 0]);
});

Deno.test("aggregateSnapshots: event time picks the window; one increment per snapshot item", () => {
  const img = (tc: number, w: number) =>
    bucketImage({ rpm: { tk: 0, tc }, wcu: { tk: 0, tc: w } });
  const a = change(
    record(
      "MODIFY",
      img(2_000, 2_000),
      img(1_000, 1_000),
      Date.parse("2024-01-15T14:59:59Z"),
    ),
  );
  const b = change(
    record(
      "MODIFY",
      img(3_000, 3_000),
      img(2_000, 2_000),
      Date.parse("2024-01-15T15:00:00Z"),
    ),
  );
  const c = change(
    record(
      "MODIFY",
      img(5_000, 4_000),
      img(3_000, 3_000),
      Date.parse("2024-01-15T15:10:00Z"),
    ),
  );
  const out = aggregateSnapshots([a, b, c], ["hourly", "daily"]);
  const byKey = new Map(
    out.map((s) => [`${s.window}@${s.windowKey}`, s]),
  );
  assert.equal(out.length, 3);
  assert.equal(
    byKey.get("hourly@2024-01-15T14:00:00Z")?.milli.get("rpm"),
    1_000n,
  );
  assert.equal(
    byKey.get("hourly@2024-01-15T15:00:00Z")?.milli.get("rpm"),
    3_000n,
  );
  assert.equal(byKey.get("hourly@2024-01-15T15:00:00Z")?.events, 2);
  assert.equal(
    byKey.get("daily@2024-01-15T00:00:00Z")?.milli.get("rpm"),
    4_000n,
  );
  assert.equal(byKey.get("daily@2024-01-15T00:00:00Z")?.events, 3);
});

Deno.test("aggregator handler: two limits, one acquire -> total_events 1; whole tokens; only bucket writes count", async () => {
  const agg = createAggregatorWorkload({
    tableName: "t",
    windows: ["hourly"],
  });
  const before = bucketImage({
    rpm: { tk: 0, tc: 0 },
    tpm: { tk: 0, tc: 0 },
    wcu: { tk: 0, tc: 0 },
  });
  const after = bucketImage({
    rpm: { tk: 0, tc: 1_000 },
    tpm: { tk: 0, tc: 250_000 },
    wcu: { tk: 0, tc: 1_000 },
  });
  const out = await agg.handle([record("MODIFY", after, before)], ctx);
  const effects = out?.effects ?? [];
  assert.equal(effects.length, 1);
  const e = decodeEffect(effects[0]?.Update as Update);
  assert.equal(e.pk, "ns1/ENTITY#e1");
  assert.equal(e.sk, "#USAGE#gpt-4#2024-01-15T14:00:00Z");
  assert.deepEqual(e.added, { rpm: 1, tpm: 250, "total_events": 1 });
  assert.equal(agg.counters().aggregator_acquires_total, 1);
});

Deno.test("aggregator handler: a limit called ttl is counted under limit#ttl", async () => {
  const agg = createAggregatorWorkload({ tableName: "t", windows: ["daily"] });
  const before = bucketImage({ ttl: { tk: 0, tc: 0 }, wcu: { tk: 0, tc: 0 } });
  const after = bucketImage({
    ttl: { tk: 0, tc: 4_000 },
    wcu: { tk: 0, tc: 1_000 },
  });
  const out = await agg.handle([record("MODIFY", after, before)], ctx);
  const e = decodeEffect(out?.effects?.[0]?.Update as Update);
  assert.deepEqual(e.added, { "limit#ttl": 4, "total_events": 1 });
});

Deno.test("aggregator handler: a record it cannot attribute is rejected with its key and produces no effect", async () => {
  const agg = createAggregatorWorkload({ tableName: "t" });
  const legacy = bucketImage({ rpm: { tk: 1, tc: 3_000 } }, {
    pk: "BUCKET#e1#gpt-4#0",
  });
  const r = record("MODIFY", legacy, legacy);
  const out = await agg.handle([r], ctx);
  assert.deepEqual(out?.effects, []);
  assert.equal(out?.rejected?.length, 1);
  assert.equal(out?.rejected?.[0]?.record, r);
  assert.match(
    out?.rejected?.[0]?.reason ?? "",
    /PK="BUCKET#e1#gpt-4#0" SK="#STATE": .*no namespace prefix/,
  );
  assert.equal(agg.counters().aggregator_records_rejected_total, 1);
  assert.equal(agg.counters().aggregator_records_skipped_total, 0);
});

Deno.test("refillUpdate: adds the accrued tokens when the balance does not cover recent use; rf advanced by the time used", () => {
  // rpm: 100 tokens per 60 s -> 1 token (1000 milli) per 600 ms.
  const img = bucketImage({ rpm: { tk: 500, tc: 10_000 } }, { rf: 1_000 });
  const c = change(record("MODIFY", img, {
    ...img,
    "b_rpm_tc": { N: "0" },
  }));
  const u = refillUpdate("t", c, c.item, new Map([["rpm", 10_000n]]), 1_700);
  assert.ok(u !== null);
  const values = u.ExpressionAttributeValues ?? {};
  // 700 ms -> 1166 milli; time used for 1166 milli = ceil(1166*60000/100000) = 700 ms.
  assert.ok(Object.values(values).some((v) => v.N === "1166"));
  assert.ok(Object.values(values).some((v) => v.N === "1700"));
  // Conditioned on rf as read and on the balance not having been raised
  // since the image (a give-back would be pushed over the clamp).
  const cond = u.ConditionExpression ?? "";
  const names = u.ExpressionAttributeNames ?? {};
  const clauses = cond.split(" AND ").map((c) =>
    c.replace(/#n\d+/g, (k) => names[k] ?? k).replace(
      /:v\d+/g,
      (k) => values[k]?.N ?? k,
    )
  );
  assert.deepEqual(clauses, ["rf = 1000", "b_rpm_tk <= 500"]);

  // No time elapsed, or a balance that covers recent consumption: nothing to write.
  assert.equal(
    refillUpdate("t", c, c.item, new Map([["rpm", 10_000n]]), 1_000),
    null,
  );
  assert.equal(
    refillUpdate("t", c, c.item, new Map([["rpm", 0n]]), 1_700),
    null,
  );
});

Deno.test("aggregator handler: a refill race is skipped and counted, other refill errors never fail the batch", async () => {
  const sent: unknown[] = [];
  let mode: "race" | "boom" = "race";
  const agg = createAggregatorWorkload({
    tableName: "t",
    windows: ["hourly"],
    clock: { now: () => 2_000, sleep: () => Promise.resolve() },
    client: {
      send(command) {
        sent.push(command.input);
        const e = mode === "race"
          ? Object.assign(new Error("cond"), {
            name: "ConditionalCheckFailedException",
          })
          : new Error("boom");
        return Promise.reject(e);
      },
    },
  });
  const before = bucketImage({ rpm: { tk: 0, tc: 0 } }, { rf: 1_000 });
  const after = bucketImage({ rpm: { tk: 0, tc: 50_000 } }, { rf: 1_000 });
  const out = await agg.handle([record("MODIFY", after, before)], ctx);
  assert.equal(out?.effects?.length, 1);
  assert.equal(sent.length, 1);
  assert.equal(agg.counters().aggregator_refills_raced_total, 1);
  mode = "boom";
  const again = await agg.handle([record("MODIFY", after, before)], ctx);
  assert.equal(again?.effects?.length, 1);
  assert.equal(agg.counters().aggregator_refill_errors_total, 1);
});

Deno.test("parseBucketChange: a refused cascade's compensation gives the write back (-1 event, tokens refunded)", async () => {
  const charged = bucketImage({
    rpm: { tk: 0, tc: 2_000 },
    wcu: { tk: 0, tc: 2_000 },
  });
  const refunded = bucketImage({
    rpm: { tk: 0, tc: 1_000 },
    wcu: { tk: 0, tc: 1_000 },
  });
  const c = change(record("MODIFY", refunded, charged));
  assert.equal(c.events, -1);
  assert.deepEqual([...c.deltas], [["rpm", -1_000n]]);
  // Charge + compensation in one batch: nothing counted.
  const before = bucketImage({
    rpm: { tk: 0, tc: 1_000 },
    wcu: { tk: 0, tc: 1_000 },
  });
  const agg = createAggregatorWorkload({ tableName: "t", windows: ["hourly"] });
  const out = await agg.handle([
    record("MODIFY", charged, before),
    record("MODIFY", refunded, charged),
  ], ctx);
  assert.deepEqual(out?.effects, []);
});

Deno.test("aggregator handler: every kind of garbage bucket item is rejected with its key and the reason, never counted, floored or dropped", async () => {
  const agg = createAggregatorWorkload({ tableName: "t", windows: ["hourly"] });
  const good = bucketImage({ rpm: { tk: 0, tc: 5_000 } });
  const before = bucketImage({ rpm: { tk: 0, tc: 1_000 } });
  const typed = (attr: string, value: AttributeValue): Image => ({
    ...good,
    [attr]: value,
  });
  const garbage: [string, StreamRecord, RegExp][] = [
    [
      "string tc",
      record("MODIFY", typed("b_rpm_tc", { S: "5000" }), before),
      /"b_rpm_tc" is a string \("5000"\)/,
    ],
    [
      "boolean tc",
      record("MODIFY", typed("b_rpm_tc", { BOOL: true }), before),
      /"b_rpm_tc" is a boolean/,
    ],
    [
      "map tc",
      record("MODIFY", typed("b_rpm_tc", { M: { n: { N: "1" } } }), before),
      /"b_rpm_tc" is a map/,
    ],
    [
      "fractional tc",
      record("MODIFY", typed("b_rpm_tc", { N: "5000.5" }), before),
      /"b_rpm_tc" is 5000\.5, expected a whole number/,
    ],
    [
      "string tk",
      record("MODIFY", typed("b_rpm_tk", { S: "x" }), before),
      /"b_rpm_tk" is a string/,
    ],
    [
      "negative capacity",
      record("MODIFY", typed("b_rpm_cp", { N: "-1" }), before),
      /"b_rpm_cp" is -1, expected zero or more/,
    ],
    [
      "string rf",
      record("MODIFY", typed("rf", { S: "now" }), before),
      /"rf" is a string/,
    ],
    [
      "fraction in the old image",
      record("MODIFY", good, { ...before, "b_rpm_tc": { N: "0.5" } }),
      /old attribute "b_rpm_tc" is 0\.5/,
    ],
    [
      "empty bucket key",
      record("MODIFY", { ...good, PK: { S: "ns1/BUCKET#" } }, before),
      /PK="ns1\/BUCKET#" SK="#STATE": the key (does not parse as|is not) a bucket key/,
    ],
    [
      "no entity",
      record(
        "MODIFY",
        bucketImage({ rpm: { tk: 0, tc: 5_000 } }, { entity: "" }),
        before,
      ),
      /no entity_id/,
    ],
    [
      "not a bucket under #STATE",
      record("MODIFY", { ...good, PK: { S: "ns1/ENTITY#e1" } }, before),
      /PK="ns1\/ENTITY#e1" SK="#STATE": the key is not a bucket key/,
    ],
    [
      "unprefixed without a legacy namespace",
      record("MODIFY", { ...good, PK: { S: "BUCKET#e1#gpt-4#0" } }, before),
      /no namespace prefix/,
    ],
  ];
  const records = garbage.map(([, r]) => r);
  const valid = record("MODIFY", good, before);
  const out = await agg.handle([...records, valid], ctx);
  const reasons = new Map(
    (out?.rejected ?? []).map((r) => [r.record, r.reason]),
  );
  for (const [what, r, pattern] of garbage) {
    const reason = reasons.get(r);
    assert.ok(reason, `${what} is rejected`);
    assert.match(reason, pattern, what);
    assert.match(
      reason,
      new RegExp(
        `PK=${JSON.stringify(r.keys["PK"]?.S ?? "")}`.replace(/[/]/g, "\\/"),
      ),
      `${what} names its key`,
    );
  }
  assert.equal(reasons.size, garbage.length, "the valid write is not rejected");
  // Only the valid write is counted: 4 tokens, one event.
  assert.equal(out?.effects?.length, 1);
  assert.equal(
    agg.counters().aggregator_records_rejected_total,
    garbage.length,
  );
  assert.equal(agg.counters().aggregator_bucket_writes_total, 1);
});

/**
 * Applies an UpdateItem built by {@linkcode refillUpdate} to a stream image
 * (`SET a = v, ...` and `ADD a v, ...`, the only clauses it writes), after
 * checking its condition (`a = v` and `a <= v` clauses) against the image.
 */
function applyUpdate(
  img: Image,
  u: {
    UpdateExpression?: string | undefined;
    ConditionExpression?: string | undefined;
    ExpressionAttributeNames?: Record<string, string> | undefined;
    ExpressionAttributeValues?: Record<string, AttributeValue> | undefined;
  },
): Image {
  const names = u.ExpressionAttributeNames ?? {};
  const values = u.ExpressionAttributeValues ?? {};
  const name = (t: string): string => names[t] ?? t;
  const value = (t: string): bigint => {
    const n = values[t]?.N;
    if (n === undefined) throw new Error(`no value ${t}`);
    return BigInt(n);
  };
  const stored = (a: string): bigint => BigInt(img[a]?.N ?? "NaN");
  for (const c of (u.ConditionExpression ?? "").split(" AND ")) {
    const [a, op, v] = c.split(" ");
    const lhs = stored(name(a ?? ""));
    const rhs = value(v ?? "");
    const ok = op === "=" ? lhs === rhs : op === "<=" ? lhs <= rhs : false;
    assert.ok(ok, `condition ${c} fails on the image`);
  }
  const out: Image = { ...img };
  const m = /^(?:SET (.*?))?(?: ?ADD (.*))?$/.exec(u.UpdateExpression ?? "");
  assert.ok(m, u.UpdateExpression);
  for (const clause of (m[1] ?? "").split(", ").filter((x) => x !== "")) {
    const [a, , v] = clause.split(" ");
    out[name(a ?? "")] = { N: String(value(v ?? "")) };
  }
  for (const clause of (m[2] ?? "").split(", ").filter((x) => x !== "")) {
    const [a, v] = clause.split(" ");
    const attr = name(a ?? "");
    out[attr] = { N: String(stored(attr) + value(v ?? "")) };
  }
  return out;
}

Deno.test("refillUpdate: the hidden wcu limit gets its refill from the old rf to the new one, clamped at its capacity (it lost it: moving rf credits only from the new rf)", () => {
  // wcu: 1000 writes a second per partition (1,000,000 millitokens of capacity).
  const cases = [
    { wcu: 200_000, shards: 1 }, // 200 writes left: refilled, not clamped
    { wcu: 800_000, shards: 1 }, // 800 left: the refill is clamped at 1000
    { wcu: -150_000, shards: 2 }, // in debt, sharded: wcu is never divided
  ];
  for (const { wcu, shards } of cases) {
    const img = bucketImage({
      rpm: { tk: 500, tc: 10_000 },
      wcu: { tk: wcu, tc: 0, cp: 1_000_000, ra: 1_000_000, rp: 1000 },
    }, { rf: 1_000, extra: { "shard_count": { N: String(shards) } } });
    const c = change(record("MODIFY", img, { ...img, "b_rpm_tc": { N: "0" } }));
    const u = refillUpdate("t", c, c.item, new Map([["rpm", 10_000n]]), 1_700);
    assert.ok(u !== null);
    const after = applyUpdate(img, u);
    const rf = BigInt(after["rf"]?.N ?? "NaN");
    assert.ok(rf > 1_000n && rf <= 1_700n, `rf ${rf}`);
    // The ideal bucket: 1000 millitokens a millisecond since the old rf, at most 1,000,000.
    const ideal = BigInt(wcu) + (rf - 1_000n) * 1_000n;
    assert.equal(
      after["b_wcu_tk"]?.N,
      String(ideal < 1_000_000n ? ideal : 1_000_000n),
      `wcu ${wcu}, ${shards} shard(s), rf 1000 -> ${rf}`,
    );
    // The limit that made the refill due got its own, from the same rf.
    assert.ok(BigInt(after["b_rpm_tk"]?.N ?? "0") > 500n);
  }
});

Deno.test("aggregator handler: windows that start together each get an exact count: the coarsest keeps the shared item, each finer one its own #{window} item (hour 00; day 1 at 00:xx; an ordinary hour)", async () => {
  const agg = createAggregatorWorkload({
    tableName: "t",
    windows: ["hourly", "daily", "monthly"],
  });
  const img = (tc: number) =>
    bucketImage({ rpm: { tk: 0, tc }, wcu: { tk: 0, tc } });
  const records = [
    // Day 15, hour 00: hourly and daily start together.
    record(
      "MODIFY",
      img(2_000),
      img(1_000),
      Date.parse("2024-01-15T00:30:00Z"),
    ),
    record(
      "MODIFY",
      img(5_000),
      img(2_000),
      Date.parse("2024-01-15T00:59:59Z"),
    ),
    record(
      "MODIFY",
      img(6_000),
      img(5_000),
      Date.parse("2024-01-15T01:00:00Z"),
    ),
    // Day 1: daily and monthly start together, and hour 00 too.
    record(
      "MODIFY",
      img(8_000),
      img(6_000),
      Date.parse("2024-02-01T00:10:00Z"),
    ),
    record(
      "MODIFY",
      img(9_000),
      img(8_000),
      Date.parse("2024-02-01T05:00:00Z"),
    ),
  ];
  const out = await agg.handle(records, ctx);
  const effects = (out?.effects ?? []).map((e) =>
    decodeEffect(e.Update as Update)
  );
  const keys = effects.map((e) => `${e.pk} ${e.sk}`);
  assert.equal(new Set(keys).size, keys.length, `one effect per item: ${keys}`);
  const windowOf = (u: Update): string | undefined =>
    Object.values(u.ExpressionAttributeValues ?? {}).map((x) => x.S).find((
      s,
    ) => s === "hourly" || s === "daily" || s === "monthly");
  const got = new Map(
    (out?.effects ?? []).map((e) => {
      const u = e.Update as Update;
      const d = decodeEffect(u);
      return [d.sk, { window: windowOf(u), ...d.added }];
    }),
  );
  const sk = "#USAGE#gpt-4#";
  assert.deepEqual(
    Object.fromEntries([...got.entries()].sort(([a], [b]) => a < b ? -1 : 1)),
    {
      // January: records 1-3.
      [`${sk}2024-01-01T00:00:00Z`]: {
        window: "monthly",
        rpm: 5,
        "total_events": 3,
      },
      // Day 15: the daily window keeps the shared item; hour 00 its own.
      [`${sk}2024-01-15T00:00:00Z`]: {
        window: "daily",
        rpm: 5,
        "total_events": 3,
      },
      [`${sk}2024-01-15T00:00:00Z#hourly`]: {
        window: "hourly",
        rpm: 4,
        "total_events": 2,
      },
      // An ordinary hour: the shared key form, no window item.
      [`${sk}2024-01-15T01:00:00Z`]: {
        window: "hourly",
        rpm: 1,
        "total_events": 1,
      },
      // Day 1: the month keeps the shared item; the day and hour 00 their own.
      [`${sk}2024-02-01T00:00:00Z`]: {
        window: "monthly",
        rpm: 3,
        "total_events": 2,
      },
      [`${sk}2024-02-01T00:00:00Z#daily`]: {
        window: "daily",
        rpm: 3,
        "total_events": 2,
      },
      [`${sk}2024-02-01T00:00:00Z#hourly`]: {
        window: "hourly",
        rpm: 2,
        "total_events": 1,
      },
      [`${sk}2024-02-01T05:00:00Z`]: {
        window: "hourly",
        rpm: 1,
        "total_events": 1,
      },
    },
  );
  // Every GSI2 key stays the by-resource one of its window key.
  for (const e of out?.effects ?? []) {
    const u = e.Update as Update;
    const vals = Object.values(u.ExpressionAttributeValues ?? {}).map((x) =>
      x.S
    );
    const key = (u.Key?.["SK"]?.S ?? "").slice(sk.length, sk.length + 20);
    assert.ok(vals.includes("ns1/RESOURCE#gpt-4"), u.Key?.["SK"]?.S);
    assert.ok(vals.includes(`USAGE#${key}#e1`), u.Key?.["SK"]?.S);
  }
});

Deno.test("aggregator handler: with hourly and daily only, day 1 hour 00's daily count keeps the shared item and the hour gets its own", async () => {
  const agg = createAggregatorWorkload({
    tableName: "t",
    windows: ["daily", "hourly"],
  });
  const img = (tc: number) =>
    bucketImage({ rpm: { tk: 0, tc }, wcu: { tk: 0, tc } });
  const out = await agg.handle([
    record(
      "MODIFY",
      img(3_000),
      img(1_000),
      Date.parse("2024-03-01T00:05:00Z"),
    ),
    record(
      "MODIFY",
      img(4_000),
      img(3_000),
      Date.parse("2024-03-01T07:05:00Z"),
    ),
  ], ctx);
  const got = Object.fromEntries(
    (out?.effects ?? []).map((e) => {
      const d = decodeEffect(e.Update as Update);
      return [d.sk, d.added];
    }),
  );
  assert.deepEqual(got, {
    "#USAGE#gpt-4#2024-03-01T00:00:00Z": { rpm: 3, "total_events": 2 },
    "#USAGE#gpt-4#2024-03-01T00:00:00Z#hourly": { rpm: 2, "total_events": 1 },
    "#USAGE#gpt-4#2024-03-01T07:00:00Z": { rpm: 1, "total_events": 1 },
  });
});
