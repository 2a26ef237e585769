/**
 * The usage aggregator workload (spec 05 §3-4, with reference weaknesses 3-6
 * fixed): turns bucket writes seen on the stream into hourly, daily and
 * monthly usage snapshots, and refills buckets proactively.
 *
 * * **Exactly once.** The snapshot increments are returned as effects, so
 *   the stream worker commits them in one transaction with the shard
 *   checkpoint: a batch replayed after a crash restarts after the last
 *   committed record and never counts twice. Increments are summed per
 *   snapshot item inside a batch (one action per item, as transactions
 *   require).
 * * **Event time.** A write is attributed to the window of its stream
 *   record's creation time, not to the bucket's last refill `rf` (which the
 *   fast path does not move).
 * * **Creation counted.** A bucket's `INSERT` carries the consumption of the
 *   acquire that created it; it is counted like a `MODIFY` from zero. The
 *   namespace-keys migration's copies carry `migrated_from` and are not
 *   counted (their history was counted on the original key).
 * * **One event per acquire.** `total_events` grows by one per bucket write
 *   that charged the hidden `wcu` limit (every acquire does, adjustments and
 *   rollbacks do not); a bucket without `wcu` counts writes that consumed.
 * * **Colliding limit names** are escaped (`core/usage.ts`).
 * * **Every window its own count.** Windows that start together (hour 00,
 *   day 1) share the stored key; the coarsest keeps that item and each
 *   finer one gets `#USAGE#{resource}#{window_key}#{window}`
 *   ({@linkcode aggregateSnapshots}); the reference double-counts.
 * * **Tolerant keys.** A pre-0.10 unprefixed bucket key is attributed to
 *   `legacyNamespaceId` when given (the namespace the migration moves it
 *   to); nothing throws on a bad key.
 * * **No silent drops.** A record that cannot be counted (a bad or
 *   unprefixed key without a legacy namespace, no entity, a typed
 *   attribute that is not a whole number: a string, boolean, map or
 *   fraction where millitokens belong) is returned as `rejected` with a
 *   reason naming its key and the attribute, so the worker dead-letters it;
 *   nothing is floored or guessed. Only the migration's copies are skipped
 *   on purpose.
 *
 * @module
 */
import type {
  AttributeValue,
  TransactWriteItem,
  UpdateItemCommandInput,
} from "@aws-sdk/client-dynamodb";
import { UpdateItemCommand } from "@aws-sdk/client-dynamodb";
import { type BucketParams, floorDiv, planRefill } from "../core/bucket.ts";
import {
  type BucketItem,
  bucketKey,
  decodeBucket,
  MIGRATED_FROM_ATTRIBUTE,
  wcuPlanned,
} from "../core/bucket_item.ts";
import { type Clock, systemClock } from "../core/clock.ts";
import { isConditionFailed } from "../core/_sdk_errors.ts";
import { Expr, type Item, updateExpression } from "../core/expr.ts";
import {
  bucketAttr,
  parseBucketAttr,
  PREFIX,
  prefixKey,
  RESERVED_NAMESPACE,
  safeParseBucketPk,
  safeParseNamespace,
  SK,
} from "../core/keys.ts";
import {
  SNAPSHOT_WINDOWS,
  snapshotUpdate,
  type SnapshotWindow,
  windowKey,
} from "../core/usage.ts";
import { WCU_LIMIT_NAME } from "../core/validation.ts";
import { callWithDeadline } from "./_util.ts";
import type { RejectedRecord } from "./batch_processor.ts";
import type { StreamImage, StreamRecord } from "./stream_source.ts";
import type { Workload } from "./workload.ts";

/** A bucket write decoded from a stream record. */
export interface BucketChange {
  /** Namespace id. */
  readonly ns: string;
  /** Entity. */
  readonly entityId: string;
  /** Resource. */
  readonly resource: string;
  /** Shard. */
  readonly shard: number;
  /** Millitokens consumed per limit by this write (negative: refund); `wcu` excluded. */
  readonly deltas: ReadonlyMap<string, bigint>;
  /**
   * Acquires this write adds to `total_events`: 1 for an acquire, -1 for
   * the compensation of a refused cascade (it gives the write back), else 0.
   */
  readonly events: number;
  /** Event time, epoch ms. */
  readonly at: number;
  /** The bucket after the write. */
  readonly item: BucketItem;
  /** Whether the key was a pre-0.10 unprefixed one. */
  readonly legacy: boolean;
}

/** Why a bucket record produced no change. */
export type BucketSkip =
  | "not_a_bucket"
  | "unprefixed_key"
  | "bad_key"
  | "no_entity"
  | "migration_copy"
  | "no_image"
  | "invalid_attribute";

/** Result of {@linkcode parseBucketChange}. */
export type BucketParse =
  | { readonly kind: "change"; readonly change: BucketChange }
  | {
    readonly kind: "skip";
    readonly reason: BucketSkip;
    /** What is wrong, for `invalid_attribute`. */
    readonly detail?: string;
  };

/** The fields of a limit stored on a bucket, and whether they may be negative. */
const LIMIT_FIELDS: Readonly<Record<string, boolean>> = {
  tk: true,
  tc: true,
  cp: false,
  ra: false,
  rp: false,
  // A calendar quota's window (issue 14), epoch ms.
  ws: false,
  we: false,
};

function typeName(a: AttributeValue): string {
  const type = Object.keys(a).find((k) =>
    (a as unknown as Record<string, unknown>)[k] !== undefined
  );
  switch (type) {
    case "S":
      return `a string (${JSON.stringify(String(a.S).slice(0, 40))})`;
    case "BOOL":
      return `a boolean (${String(a.BOOL)})`;
    case "M":
      return "a map";
    case "L":
      return "a list";
    case "NULL":
      return "null";
    case "B":
      return "binary";
    case "SS":
    case "NS":
    case "BS":
      return "a set";
    default:
      return "untyped";
  }
}

/** What is wrong with one numeric attribute, or `undefined`. */
function badNumber(
  name: string,
  a: AttributeValue,
  negativeAllowed: boolean,
): string | undefined {
  if (!("N" in a) || typeof a.N !== "string") {
    return `attribute "${name}" is ${typeName(a)}, expected a whole number`;
  }
  if (!/^-?\d+$/.test(a.N)) {
    return `attribute "${name}" is ${a.N}, expected a whole number (never rounded)`;
  }
  if (!negativeAllowed && a.N.startsWith("-")) {
    return `attribute "${name}" is ${a.N}, expected zero or more`;
  }
  return undefined;
}

/**
 * The first typed attribute of a bucket image that is not what the limiter
 * writes (`rf`, `shard_count` and every `b_{limit}_{tk|tc|cp|ra|rp}` are
 * whole numbers), or `undefined` when all are.
 */
export function invalidBucketAttribute(
  image: StreamImage,
): string | undefined {
  for (const [name, a] of Object.entries(image)) {
    let problem: string | undefined;
    if (name === "rf") problem = badNumber(name, a, false);
    else if (name === "shard_count") {
      problem = badNumber(name, a, false) ??
        (a.N === "0"
          ? `attribute "${name}" is 0, expected 1 or more`
          : undefined);
    } else if (name.startsWith("b_")) {
      const parsed = parseBucketAttr(name);
      const negative = parsed ? LIMIT_FIELDS[parsed.field] : undefined;
      if (negative !== undefined) problem = badNumber(name, a, negative);
    }
    if (problem !== undefined) return problem;
  }
  return undefined;
}

function s(image: Item | undefined, name: string): string | undefined {
  const a = image?.[name];
  return a !== undefined && "S" in a && typeof a.S === "string"
    ? a.S
    : undefined;
}

/** Whether a record is an insert or modification of a bucket item (cheap; never throws). */
export function isBucketWrite(record: StreamRecord): boolean {
  if (record.eventName === "REMOVE") return false;
  const pk = s(record.keys, "PK");
  const sk = s(record.keys, "SK");
  if (pk === undefined || sk === undefined) return false;
  if (pk.startsWith(`${RESERVED_NAMESPACE}/`)) return false;
  return sk === SK.STATE || sk.startsWith(`#${PREFIX.BUCKET}`);
}

/**
 * Decodes a bucket write. Never throws: a record it cannot attribute is a
 * `skip` with the reason.
 *
 * @param legacyNamespaceId namespace of pre-0.10 unprefixed keys; skipped when absent
 */
export function parseBucketChange(
  record: StreamRecord,
  legacyNamespaceId?: string,
): BucketParse {
  const image = record.newImage;
  if (image === undefined) return { kind: "skip", reason: "no_image" };
  const pk = s(record.keys, "PK") ?? s(image, "PK");
  const sk = s(record.keys, "SK") ?? s(image, "SK");
  if (pk === undefined || sk === undefined) {
    return { kind: "skip", reason: "not_a_bucket" };
  }
  let ns: string;
  let legacy = false;
  let keyText = pk;
  const split = safeParseNamespace(pk);
  if (split.ok) {
    ns = split.value.namespaceId;
  } else if (split.issue === "unprefixed") {
    if (legacyNamespaceId === undefined) {
      return { kind: "skip", reason: "unprefixed_key" };
    }
    ns = legacyNamespaceId;
    legacy = true;
    keyText = prefixKey(ns, pk);
  } else {
    return { kind: "skip", reason: "bad_key" };
  }
  if (ns === RESERVED_NAMESPACE) {
    return { kind: "skip", reason: "not_a_bucket" };
  }

  let entityId: string;
  let resource: string;
  let shard = 0;
  if (sk === SK.STATE) {
    const parsed = safeParseBucketPk(keyText);
    if (!parsed.ok) {
      return {
        kind: "skip",
        reason: parsed.issue === "not_a_bucket" ? "not_a_bucket" : "bad_key",
      };
    }
    ({ entityId, resource, shard } = parsed.value);
  } else if (sk.startsWith(`#${PREFIX.BUCKET}`)) {
    // Pre-0.9 layout: {ns}/ENTITY#{id} with SK #BUCKET#{resource}.
    resource = sk.slice(PREFIX.BUCKET.length + 1);
    entityId = s(image, "entity_id") ?? "";
    if (resource === "") return { kind: "skip", reason: "bad_key" };
  } else {
    return { kind: "skip", reason: "not_a_bucket" };
  }
  if (entityId === "" || (s(image, "entity_id") ?? "") === "") {
    return { kind: "skip", reason: "no_entity" };
  }

  const isInsert = record.eventName === "INSERT" ||
    record.oldImage === undefined;
  if (isInsert && image[MIGRATED_FROM_ATTRIBUTE] !== undefined) {
    return { kind: "skip", reason: "migration_copy" };
  }
  const bad = invalidBucketAttribute(image) ??
    (isInsert ? undefined : invalidBucketAttribute(record.oldImage ?? {})
      ?.replace(/^attribute/, "old attribute"));
  if (bad !== undefined) {
    return { kind: "skip", reason: "invalid_attribute", detail: bad };
  }
  const item = decodeBucket(image, shard);
  const before = isInsert
    ? undefined
    : decodeBucket(record.oldImage ?? {}, shard);
  const deltas = new Map<string, bigint>();
  let wcuDelta: bigint | null = null;
  for (const [name, limit] of item.limits) {
    if (limit.tc === null) continue;
    let delta: bigint;
    if (before === undefined) {
      delta = limit.tc;
    } else {
      const old = before.limits.get(name)?.tc ?? null;
      // A limit added to an existing bucket starts its counter at this write.
      delta = old === null ? limit.tc : limit.tc - old;
    }
    if (name === WCU_LIMIT_NAME) wcuDelta = delta;
    else if (delta !== 0n) deltas.set(name, delta);
  }
  const events = wcuDelta !== null
    ? (wcuDelta > 0n ? 1 : wcuDelta < 0n ? -1 : 0)
    : ([...deltas.values()].some((d) => d > 0n) ? 1 : 0);
  return {
    kind: "change",
    change: {
      ns,
      entityId,
      resource,
      shard,
      deltas,
      events,
      at: record.approximateCreationTime,
      item,
      legacy,
    },
  };
}

/** Options of {@linkcode createAggregatorWorkload}. */
export interface AggregatorOptions {
  /** The table (snapshots and buckets). */
  readonly tableName: string;
  /** Windows to maintain. @default ["hourly", "daily"] */
  readonly windows?: readonly SnapshotWindow[];
  /** Snapshot retention in days, from the window start. @default 90 */
  readonly retentionDays?: number;
  /** Namespace of pre-0.10 unprefixed bucket keys; such records are skipped without it. */
  readonly legacyNamespaceId?: string;
  /** Proactive refill (spec 05 §4.1); needs `client`. @default true when a client is given */
  readonly refill?: boolean;
  /** Client for refill writes (outside the checkpoint transaction: they are idempotent by their `rf` condition). */
  readonly client?: {
    send(
      command: UpdateItemCommand,
      options?: { abortSignal?: AbortSignal },
    ): Promise<unknown>;
  };
  /** Time source for refills. */
  readonly clock?: Clock;
  /** Called when a refill write fails for another reason than a lost race (the batch goes on). */
  readonly onRefillError?: (error: unknown) => void;
  /** Deadline of one refill write; a refill is an optimisation and never holds a batch up longer. @default 2000 */
  readonly refillTimeoutMs?: number;
}

const SKIP_REASONS: Readonly<Record<BucketSkip, string>> = {
  "not_a_bucket": "the key is not a bucket key",
  "unprefixed_key":
    "the key has no namespace prefix (pre-0.10) and the table has no default namespace to attribute it to",
  "bad_key": "the key does not parse as a bucket key",
  "no_entity": "the item has no entity_id",
  "migration_copy": "the item is a copy made by the namespace-keys migration",
  "no_image": "the record has no new image",
  "invalid_attribute": "an attribute has the wrong type",
};

/**
 * Why a bucket record cannot be counted, in words that name its key: the
 * reason of its dead letter and of the log line about it.
 */
export function describeBucketSkip(
  record: StreamRecord,
  skip: Extract<BucketParse, { kind: "skip" }>,
): string {
  const pk = s(record.keys, "PK") ?? "?";
  const sk = s(record.keys, "SK") ?? "?";
  return `Cannot count bucket write PK=${JSON.stringify(pk)} SK=${
    JSON.stringify(sk)
  }: ${skip.detail ?? SKIP_REASONS[skip.reason]}`;
}

/** Counters of the aggregator, as exported on `/metrics`. */
export type AggregatorCounters = {
  /** Bucket writes counted. */
  "aggregator_bucket_writes_total": number;
  /** Acquires counted in `total_events`. */
  "aggregator_acquires_total": number;
  /** Snapshot updates returned for commit. */
  "aggregator_snapshot_updates_total": number;
  /** Bucket records not counted on purpose (copies made by the namespace-keys migration). */
  "aggregator_records_skipped_total": number;
  /** Bucket records that cannot be counted (bad keys, no entity, mistyped attributes): dead-lettered. */
  "aggregator_records_rejected_total": number;
  /** Unprefixed (pre-0.10) bucket records attributed to the legacy namespace. */
  "aggregator_legacy_records_total": number;
  /** Proactive refill writes that landed. */
  "aggregator_refills_written_total": number;
  /** Refill writes skipped because another writer moved `rf` first. */
  "aggregator_refills_raced_total": number;
  /** Refill writes that failed otherwise. */
  "aggregator_refill_errors_total": number;
};

interface SnapshotAggregate {
  readonly ns: string;
  readonly entityId: string;
  readonly resource: string;
  readonly window: SnapshotWindow;
  readonly windowKey: string;
  /** Written to the window's own item (its key is a coarser window's). */
  readonly windowItem: boolean;
  readonly milli: Map<string, bigint>;
  events: number;
}

interface BucketAggregate {
  readonly change: BucketChange;
  item: BucketItem;
  readonly consumed: Map<string, bigint>;
}

/**
 * Sums a batch's bucket changes into one increment per snapshot item.
 * Millitokens are summed before the conversion to whole tokens.
 *
 * Every window gets its own exact count. Windows that start together have
 * the same key (`#USAGE#{resource}#{window_key}`, spec 01 §4.8, has no
 * window name): hour 00's hourly key is its day's daily key, and day 1's
 * daily key (and its hour 00) is the month's monthly key. The coarsest of
 * them keeps that shared item (the one a Python 0.10 client reads, labeled
 * by its `window` attribute); each finer one is written to its own item,
 * `#USAGE#{resource}#{window_key}#{window}` (`windowItem`), with the same
 * attributes, which the Python client's `#USAGE#` queries read as that
 * window. The reference adds every window's increment to the shared item
 * (a double count); here each item gets one increment per batch, so the
 * checkpoint transaction never has two effects on one item.
 */
export function aggregateSnapshots(
  changes: readonly BucketChange[],
  windows: readonly SnapshotWindow[],
): SnapshotAggregate[] {
  const out = new Map<string, SnapshotAggregate>();
  // Coarsest first, so that the shared item is the coarsest window's.
  const order = [...new Set(windows)].sort((a, b) =>
    SNAPSHOT_WINDOWS.indexOf(b) - SNAPSHOT_WINDOWS.indexOf(a)
  );
  for (const c of changes) {
    if (c.deltas.size === 0 && c.events === 0) continue;
    const keys = new Set<string>();
    for (const window of order) {
      const key = windowKey(window, c.at);
      // A finer window starting with a coarser one: its own item.
      const windowItem = keys.has(key);
      keys.add(key);
      const id = [c.ns, c.entityId, c.resource, key, windowItem ? window : ""]
        .join("\u0000");
      let agg = out.get(id);
      if (agg === undefined) {
        agg = {
          ns: c.ns,
          entityId: c.entityId,
          resource: c.resource,
          window,
          windowKey: key,
          windowItem,
          milli: new Map(),
          events: 0,
        };
        out.set(id, agg);
      }
      for (const [name, d] of c.deltas) {
        agg.milli.set(name, (agg.milli.get(name) ?? 0n) + d);
      }
      agg.events += c.events;
    }
  }
  return [...out.values()];
}

/**
 * The proactive refill of one bucket (spec 05 §4.1): tokens that have
 * accrued since `rf`, added to every limit whose projected balance does
 * not cover its recent consumption, with `rf` advanced by the time that
 * produced them (drift-compensated, unlike the reference's `rf = now`),
 * conditioned on `rf` being unchanged. The hidden `wcu` limit gets its
 * refill over the same time, clamped at its capacity, as in the
 * reference, where it "participates like any other limit". `null` when
 * nothing is due.
 */
export function refillUpdate(
  table: string,
  change: BucketChange,
  item: BucketItem,
  consumed: ReadonlyMap<string, bigint>,
  now: number,
): UpdateItemCommandInput | null {
  // The hidden wcu limit rides along below; a calendar quota (it has a
  // window, b_{name}_ws) is never refilled, only reset.
  const limits = [...item.limits.entries()].filter(([name, l]) =>
    name !== WCU_LIMIT_NAME && (l.ws ?? null) === null &&
    l.params.ra > 0n && l.params.rp > 0n && l.params.cp > 0n
  );
  if (limits.length === 0) return null;
  const shards = BigInt(Math.max(1, item.shardCount));
  const effective = limits.map(([, l]): BucketParams => ({
    cp: l.params.cp / shards || 1n,
    ra: l.params.ra / shards || 1n,
    rp: l.params.rp,
  }));
  const nowMs = BigInt(Math.floor(now));
  const plan = planRefill(
    item.rf,
    nowMs,
    limits.map(([, l], i) => ({ tk: l.tk, p: effective[i] as BucketParams })),
  );
  if (plan.rf <= item.rf) return null;
  const e = new Expr();
  const add: string[] = [];
  const cond: string[] = [];
  // Due when some limit's projected balance does not cover its recent
  // consumption; then every limit gets its refill (rf moves for all of them).
  const due = limits.some(([name], i) => {
    const recent = consumed.get(name) ?? 0n;
    return (plan.tk[i] as bigint) < (recent > 0n ? recent : 0n);
  });
  if (!due) return null;
  limits.forEach(([name, l], i) => {
    const delta = (plan.tk[i] as bigint) - l.tk;
    if (delta === 0n) return;
    const tk = e.n(bucketAttr(name, "tk"));
    add.push(`${tk} ${e.num(delta)}`);
    // The refill was computed from the image's balance: a balance raised
    // since (a give-back) would be pushed over the clamp.
    cond.push(`${tk} <= ${e.num(l.tk)}`);
  });
  if (add.length === 0) return null;
  // rf moves for every limit of the item: the hidden wcu limit (the write
  // budget the limiter's shard split reads) gets its refill from the old rf
  // to the new one too, clamped at its capacity, as every limiter write
  // under the rf lock does (wcuPlanned). Left out, each proactive refill
  // lost wcu's refill since the old rf.
  if (item.limits.has(WCU_LIMIT_NAME)) {
    const wcu = wcuPlanned(item, plan.rf, 0n);
    const delta = wcu.tkAfter - (wcu.tkBefore ?? wcu.tkAfter);
    if (delta !== 0n) {
      add.push(`${e.n(bucketAttr(WCU_LIMIT_NAME, "tk"))} ${e.num(delta)}`);
    }
  }
  const rf = e.n("rf");
  return {
    TableName: table,
    Key: bucketKey({
      ns: change.ns,
      entityId: change.entityId,
      resource: change.resource,
      shard: change.shard,
    }),
    UpdateExpression: updateExpression({
      set: [`${rf} = ${e.num(plan.rf)}`],
      add,
    }),
    ConditionExpression: [`${rf} = ${e.num(item.rf)}`, ...cond].join(" AND "),
    ...e.attrs(),
  };
}

/**
 * Creates the aggregator workload.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createAggregatorWorkload } from "./aggregator.ts";
 *
 * const agg = createAggregatorWorkload({ tableName: "rate-limits", windows: ["hourly"] });
 * assert.equal(agg.name, "aggregator");
 * assert.equal(agg.counters().aggregator_snapshot_updates_total, 0);
 * ```
 */
export function createAggregatorWorkload(
  options: AggregatorOptions,
): Workload & { counters(): AggregatorCounters } {
  const windows = options.windows ?? ["hourly", "daily"];
  if (windows.length === 0) {
    throw new RangeError("Cannot aggregate usage: no snapshot window");
  }
  const retentionDays = options.retentionDays ?? 90;
  if (!Number.isSafeInteger(retentionDays) || retentionDays <= 0) {
    throw new RangeError(
      `Invalid retentionDays ${retentionDays}: expected a positive integer of days`,
    );
  }
  const client = options.client;
  const doRefill = client !== undefined && (options.refill ?? true);
  const clock = options.clock ?? systemClock;
  const now = (): number => clock.now();
  const refillTimeoutMs = options.refillTimeoutMs ?? 2_000;
  const counters: AggregatorCounters = {
    "aggregator_bucket_writes_total": 0,
    "aggregator_acquires_total": 0,
    "aggregator_snapshot_updates_total": 0,
    "aggregator_records_skipped_total": 0,
    "aggregator_records_rejected_total": 0,
    "aggregator_legacy_records_total": 0,
    "aggregator_refills_written_total": 0,
    "aggregator_refills_raced_total": 0,
    "aggregator_refill_errors_total": 0,
  };

  async function refillAll(
    buckets: Iterable<BucketAggregate>,
    signal: AbortSignal,
  ): Promise<void> {
    if (!doRefill || client === undefined) return;
    const at = now();
    await Promise.all([...buckets].map(async (b) => {
      const input = refillUpdate(
        options.tableName,
        b.change,
        b.item,
        b.consumed,
        at,
      );
      if (input === null) return;
      try {
        await callWithDeadline(
          clock,
          refillTimeoutMs,
          signal,
          "refill a bucket",
          (abortSignal) =>
            client.send(new UpdateItemCommand(input), { abortSignal }),
        );
        counters.aggregator_refills_written_total++;
      } catch (error) {
        if (isConditionFailed(error)) {
          counters.aggregator_refills_raced_total++;
          return;
        }
        if (signal.aborted) return;
        // An optimisation failed: the counts must still be committed.
        counters.aggregator_refill_errors_total++;
        options.onRefillError?.(error);
      }
    }));
  }

  return {
    name: "aggregator",
    accepts: isBucketWrite,
    counters: () => ({ ...counters }),
    async handle(records, ctx) {
      const changes: BucketChange[] = [];
      const rejected: RejectedRecord[] = [];
      const buckets = new Map<string, BucketAggregate>();
      for (const r of records) {
        const parsed = parseBucketChange(r, options.legacyNamespaceId);
        if (parsed.kind === "skip") {
          if (parsed.reason === "migration_copy") {
            counters.aggregator_records_skipped_total++;
          } else {
            rejected.push({ record: r, reason: describeBucketSkip(r, parsed) });
          }
          continue;
        }
        const c = parsed.change;
        changes.push(c);
        const id = [c.ns, c.entityId, c.resource, c.shard].join("\u0000");
        const b = buckets.get(id);
        if (b === undefined) {
          buckets.set(id, {
            change: c,
            item: c.item,
            consumed: new Map(c.deltas),
          });
        } else {
          b.item = c.item;
          for (const [n, d] of c.deltas) {
            b.consumed.set(n, (b.consumed.get(n) ?? 0n) + d);
          }
        }
      }
      const effects: TransactWriteItem[] = [];
      const ttlBase = (key: string): number =>
        Math.floor(Date.parse(key) / 1000) + retentionDays * 86_400;
      for (const agg of aggregateSnapshots(changes, windows)) {
        const tokens = new Map<string, bigint>();
        for (const [name, milli] of agg.milli) {
          const whole = floorDiv(milli, 1000n);
          if (whole !== 0n) tokens.set(name, whole);
        }
        if (tokens.size === 0 && agg.events === 0) continue;
        effects.push({
          Update: snapshotUpdate(options.tableName, {
            ns: agg.ns,
            entityId: agg.entityId,
            resource: agg.resource,
            window: agg.window,
            windowKey: agg.windowKey,
            counters: tokens,
            events: agg.events,
            ttl: ttlBase(agg.windowKey),
            windowItem: agg.windowItem,
          }),
        });
      }
      await refillAll(buckets.values(), ctx.signal);
      // Counters of what this invocation produced; a replay after a crash counts again here, never in the table.
      counters.aggregator_bucket_writes_total += changes.length;
      counters.aggregator_acquires_total +=
        changes.filter((c) => c.events > 0).length;
      counters.aggregator_legacy_records_total +=
        changes.filter((c) => c.legacy).length;
      counters.aggregator_snapshot_updates_total += effects.length;
      counters.aggregator_records_rejected_total += rejected.length;
      return rejected.length > 0 ? { effects, rejected } : { effects };
    },
  };
}
