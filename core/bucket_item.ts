/**
 * The composite bucket item (spec 01 §4.2): decoding, and the pure builders
 * of every write against it. Nothing here performs I/O.
 *
 * @module
 */
import type {
  AttributeValue,
  TransactWriteItem,
  Update,
  UpdateItemCommandInput,
} from "@aws-sdk/client-dynamodb";
import {
  type BucketParams,
  paramsOf,
  refill,
  sameParams,
  settleParams,
  shardParams,
} from "./bucket.ts";
import type { Limit } from "./limit.ts";
import { Expr, type Item, updateExpression } from "./expr.ts";
import { bool, str } from "./expr.ts";
import {
  bucketAttr,
  gsi2PkResource,
  gsi2SkBucket,
  gsi3PkEntity,
  gsi3SkBucket,
  gsi4SkBucket,
  parseBucketAttr,
  pkBucket,
  SK,
} from "./keys.ts";
import { WCU_LIMIT_NAME } from "./validation.ts";
import { settleRefill } from "./refill_settle.ts";

/** Hidden per-partition write-capacity limit: 1000 writes per second, in millitokens. */
export const WCU_PARAMS: BucketParams = {
  cp: 1_000_000n,
  ra: 1_000_000n,
  rp: 1000n,
};
/**
 * Attribute the namespace-keys migration puts on its copies of bucket items
 * (the original key), so the usage aggregator does not count the copy's
 * `INSERT` as new consumption. Other readers ignore it.
 */
export const MIGRATED_FROM_ATTRIBUTE = "migrated_from";
/** Millitokens one write takes from `wcu`. */
export const WCU_PER_WRITE = 1000n;

/** One limit's stored fields. */
export interface StoredLimit {
  /** Millitokens (may be negative). */
  readonly tk: bigint;
  /** Stored (undivided) parameters. */
  readonly params: BucketParams;
  /** Net consumed, or `null` when the attribute is missing. */
  readonly tc: bigint | null;
  /** Calendar quota: the stored window's start (epoch ms), `null`/absent for a rolling limit. */
  readonly ws?: bigint | null;
  /** Calendar quota: the stored window's end (epoch ms). */
  readonly we?: bigint | null;
}

/** A decoded bucket item. */
export interface BucketItem {
  /** Entity id. */
  readonly entityId: string;
  /** Resource. */
  readonly resource: string;
  /** Shard of this item. */
  readonly shard: number;
  /** Shared last refill, epoch ms. */
  readonly rf: bigint;
  /** Shard count recorded on this item. */
  readonly shardCount: number;
  /** Denormalised cascade flag. */
  readonly cascade: boolean;
  /** Denormalised parent id. */
  readonly parentId: string | null;
  /** TTL epoch seconds, or `null`. */
  readonly ttl: number | null;
  /** Limits by name, `wcu` included. */
  readonly limits: ReadonlyMap<string, StoredLimit>;
}

function bigAttr(a: AttributeValue | undefined): bigint | null {
  if (!a || !("N" in a) || typeof a.N !== "string") return null;
  return /^-?\d+$/.test(a.N) ? BigInt(a.N) : BigInt(Math.floor(Number(a.N)));
}

/** A calendar quota's stored window (`{}` for a rolling limit). */
function calendarWindowOf(
  item: Item,
  name: string,
): { ws?: bigint; we?: bigint } {
  const ws = bigAttr(item[bucketAttr(name, "ws")]);
  const we = bigAttr(item[bucketAttr(name, "we")]);
  return ws === null ? {} : we === null ? { ws } : { ws, we };
}

/** Decodes a bucket item; limits are found by their `b_{name}_tk` attribute. */
export function decodeBucket(item: Item, shard: number): BucketItem {
  const limits = new Map<string, StoredLimit>();
  for (const attr of Object.keys(item)) {
    if (!attr.endsWith("_tk")) continue;
    const parsed = parseBucketAttr(attr);
    if (!parsed) continue;
    const name = parsed.limitName;
    limits.set(name, {
      tk: bigAttr(item[attr]) ?? 0n,
      params: {
        cp: bigAttr(item[bucketAttr(name, "cp")]) ?? 0n,
        ra: bigAttr(item[bucketAttr(name, "ra")]) ?? 0n,
        rp: bigAttr(item[bucketAttr(name, "rp")]) ?? 0n,
      },
      tc: bigAttr(item[bucketAttr(name, "tc")]),
      ...calendarWindowOf(item, name),
    });
  }
  const ttl = bigAttr(item["ttl"]);
  return {
    entityId: str(item, "entity_id") ?? "",
    resource: str(item, "resource") ?? "",
    shard,
    rf: bigAttr(item["rf"]) ?? 0n,
    shardCount: Number(bigAttr(item["shard_count"]) ?? 1n) || 1,
    cascade: bool(item, "cascade") ?? false,
    parentId: str(item, "parent_id"),
    ttl: ttl === null ? null : Number(ttl),
    limits,
  };
}

/** Identifies one bucket item. */
export interface BucketRef {
  /** Namespace id. */
  readonly ns: string;
  /** Entity id. */
  readonly entityId: string;
  /** Resource. */
  readonly resource: string;
  /** Shard. */
  readonly shard: number;
}

/** The primary key of a bucket item. */
export function bucketKey(ref: BucketRef): Item {
  return {
    PK: { S: pkBucket(ref.ns, ref.entityId, ref.resource, ref.shard) },
    SK: { S: SK.STATE },
  };
}

/** Unconditional `ADD tk -delta, tc +delta` per limit: only the last resort of a debt that lost every race (see BucketWriter.apply). */
export function deltaUpdate(
  table: string,
  ref: BucketRef,
  deltas: ReadonlyMap<string, bigint>,
): Update {
  const e = new Expr();
  const add: string[] = [];
  for (const [name, d] of deltas) {
    if (d === 0n) continue;
    add.push(
      `${e.n(bucketAttr(name, "tk"))} ${e.num(-d)}`,
      `${e.n(bucketAttr(name, "tc"))} ${e.num(d)}`,
    );
  }
  return {
    TableName: table,
    Key: bucketKey(ref),
    UpdateExpression: updateExpression({ add }),
    ...e.attrs(),
  };
}

/** A limit's planned state in a slow-path write. */
export interface PlannedLimit {
  /** Limit name (`wcu` included). */
  readonly name: string;
  /** Parameters to store (undivided). */
  readonly params: BucketParams;
  /** Millitokens as read, or `null` when the limit is new in this item. */
  readonly tkBefore: bigint | null;
  /** Millitokens after refill and consumption. */
  readonly tkAfter: bigint;
  /** Millitokens consumed by this write. */
  readonly consumed: bigint;
  /**
   * Stored parameters as read: the write is conditioned on them still being
   * there (a writer with a stale config must not overwrite a newer one, nor
   * compute with the wrong capacity). `null`/absent: no condition.
   */
  readonly paramsBefore?: BucketParams | null;
  /**
   * Condition the write on `tk ≤ tkBefore`: the refill was computed from
   * `tkBefore`, and a balance raised meanwhile (a give-back) would push the
   * result over the clamp. Off for the hidden `wcu` limit.
   */
  readonly capped?: boolean;
  /** Refuse the write when the balance no longer covers `consumed` (false for debt). @default true */
  readonly check?: boolean;
  /**
   * Condition the write on `tk = tkBefore` (instead of `≤`): the capacity
   * clamp cut this limit's refill, which is right only for that exact
   * balance (see `RefillPlan.clamped`).
   */
  readonly exact?: boolean;
  /**
   * A calendar quota's window (see `calendar_bucket.ts`): stored, and
   * conditioned on the one read; `null` removes a window left by a limit
   * that is no longer a calendar quota.
   */
  readonly window?: PlannedWindow | null;
}

/** The window part of a calendar quota's write. */
export interface PlannedWindow {
  /** `b_{name}_ws` as read (`null`: absent), the write's condition. */
  readonly before: bigint | null;
  /** The window start to store, epoch ms. */
  readonly start: bigint;
  /** The window end to store, epoch ms. */
  readonly end: bigint;
}

/** Everything a slow-path write of one bucket item needs. */
export interface SlowWrite {
  /** The item. */
  readonly ref: BucketRef;
  /** Whether the item did not exist when read. */
  readonly create: boolean;
  /** `rf` as read (the optimistic lock). */
  readonly expectedRf: bigint;
  /** The new `rf`. */
  readonly now: bigint;
  /** Every limit of the item after the write. */
  readonly limits: readonly PlannedLimit[];
  /** Cascade flag to store. */
  readonly cascade: boolean;
  /** Parent to store. */
  readonly parentId: string | null;
  /** Shard count to store on a new item. */
  readonly shardCount: number;
  /** `number`: set; `"remove"`: remove; `null`: leave. */
  readonly ttl: number | "remove" | null;
}

/** Builds the create (PutItem) or the locked update (UpdateItem) of a slow-path write (spec 02 §4.2). */
export function slowPathWrite(table: string, w: SlowWrite): TransactWriteItem {
  const { ref } = w;
  if (w.create) {
    const item: Item = {
      ...bucketKey(ref),
      "entity_id": { S: ref.entityId },
      resource: { S: ref.resource },
      rf: { N: String(w.now) },
      "shard_count": { N: String(w.shardCount) },
      cascade: { BOOL: w.cascade },
      GSI2PK: { S: gsi2PkResource(ref.ns, ref.resource) },
      GSI2SK: { S: gsi2SkBucket(ref.entityId, ref.shard) },
      GSI3PK: { S: gsi3PkEntity(ref.ns, ref.entityId) },
      GSI3SK: { S: gsi3SkBucket(ref.resource, ref.shard) },
      GSI4PK: { S: ref.ns },
      GSI4SK: { S: gsi4SkBucket(ref.entityId, ref.resource, ref.shard) },
    };
    if (w.parentId !== null) item["parent_id"] = { S: w.parentId };
    if (typeof w.ttl === "number") item["ttl"] = { N: String(w.ttl) };
    for (const l of w.limits) {
      item[bucketAttr(l.name, "tk")] = { N: String(l.tkAfter) };
      item[bucketAttr(l.name, "cp")] = { N: String(l.params.cp) };
      item[bucketAttr(l.name, "ra")] = { N: String(l.params.ra) };
      item[bucketAttr(l.name, "rp")] = { N: String(l.params.rp) };
      item[bucketAttr(l.name, "tc")] = { N: String(l.consumed) };
      if (l.window) {
        item[bucketAttr(l.name, "ws")] = { N: String(l.window.start) };
        item[bucketAttr(l.name, "we")] = { N: String(l.window.end) };
      }
    }
    return {
      Put: {
        TableName: table,
        Item: item,
        ConditionExpression: "attribute_not_exists(PK)",
        ReturnValuesOnConditionCheckFailure: "ALL_OLD",
      },
    };
  }
  const e = new Expr();
  const set: string[] = [
    `${e.n("rf")} = ${e.num(w.now)}`,
    `${e.n("cascade")} = ${e.v({ BOOL: w.cascade })}`,
  ];
  const add: string[] = [];
  const remove: string[] = [];
  const cond: string[] = [`${e.n("rf")} = ${e.num(w.expectedRf)}`];
  if (w.parentId !== null) {
    set.push(`${e.n("parent_id")} = ${e.str(w.parentId)}`);
  } else remove.push(e.n("parent_id"));
  if (typeof w.ttl === "number") set.push(`${e.n("ttl")} = ${e.num(w.ttl)}`);
  else if (w.ttl === "remove") remove.push(e.n("ttl"));
  for (const l of w.limits) {
    const tk = (): string => e.n(bucketAttr(l.name, "tk"));
    const tc = (): string => e.n(bucketAttr(l.name, "tc"));
    set.push(
      `${e.n(bucketAttr(l.name, "cp"))} = ${e.num(l.params.cp)}`,
      `${e.n(bucketAttr(l.name, "ra"))} = ${e.num(l.params.ra)}`,
      `${e.n(bucketAttr(l.name, "rp"))} = ${e.num(l.params.rp)}`,
    );
    if (l.tkBefore === null) {
      // A limit added to the config after the bucket was created (reference weakness 28).
      set.push(
        `${tk()} = ${e.num(l.tkAfter)}`,
        `${tc()} = ${e.num(l.consumed)}`,
      );
      cond.push(`attribute_not_exists(${tk()})`);
    } else {
      const delta = l.tkAfter - l.tkBefore; // refill − consumed
      if (delta !== 0n) add.push(`${tk()} ${e.num(delta)}`);
      if (l.consumed !== 0n) add.push(`${tc()} ${e.num(l.consumed)}`);
      // The admission: the balance, refilled, still covers the charge
      // (concurrent plain writes do not move rf). Negative in debt too.
      if ((l.check ?? true) && l.consumed > 0n) {
        cond.push(`${tk()} >= ${e.num(-delta)}`);
      }
      if (l.exact) cond.push(`${tk()} = ${e.num(l.tkBefore)}`);
      else if (l.capped) cond.push(`${tk()} <= ${e.num(l.tkBefore)}`);
    }
    if (l.window === null) {
      remove.push(e.n(bucketAttr(l.name, "ws")), e.n(bucketAttr(l.name, "we")));
    } else if (l.window) {
      const ws = e.n(bucketAttr(l.name, "ws"));
      set.push(
        `${ws} = ${e.num(l.window.start)}`,
        `${e.n(bucketAttr(l.name, "we"))} = ${e.num(l.window.end)}`,
      );
      cond.push(
        l.window.before === null
          ? `attribute_not_exists(${ws})`
          : `${ws} = ${e.num(l.window.before)}`,
      );
    }
    if (l.paramsBefore) {
      cond.push(
        `${e.n(bucketAttr(l.name, "cp"))} = ${e.num(l.paramsBefore.cp)}`,
        `${e.n(bucketAttr(l.name, "ra"))} = ${e.num(l.paramsBefore.ra)}`,
        `${e.n(bucketAttr(l.name, "rp"))} = ${e.num(l.paramsBefore.rp)}`,
      );
    }
  }
  return {
    Update: {
      TableName: table,
      Key: bucketKey(ref),
      UpdateExpression: updateExpression({ set, add, remove }),
      ConditionExpression: cond.join(" AND "),
      ...e.attrs(),
      ReturnValuesOnConditionCheckFailure: "ALL_OLD",
    },
  };
}

/** One limit's part of a {@linkcode plainUpdate}. */
export interface PlainLimit {
  /** Limit name. */
  readonly name: string;
  /** Millitokens taken from `tk` (negative: given back). */
  readonly take: bigint;
  /** Millitokens added to `tc` (the net consumption counter). */
  readonly count: bigint;
  /** Stored (undivided) parameters the write expects, or `null` for no check. */
  readonly params: BucketParams | null;
  /** Condition `tk ≥ min` (an admission), or `null`. */
  readonly min: bigint | null;
  /** Condition `tk ≤ max` (the saturation ceiling), or `null`. */
  readonly max: bigint | null;
  /** A calendar quota: condition `b_{name}_ws` equal to this window start. */
  readonly window?: bigint;
}

/** A write that only ADDs: admission charges, lease deltas, give-backs. */
export interface PlainWrite {
  /** The item. */
  readonly ref: BucketRef;
  /** Limits written. */
  readonly limits: readonly PlainLimit[];
  /** Condition `rf ≥ rfMin` (the ceilings were computed from it), or `null`. */
  readonly rfMin: bigint | null;
  /** Millitokens taken from the hidden `wcu` limit: one write's worth for an acquire, minus that to give it back, else 0. */
  readonly wcu: bigint;
  /** Condition: the item is not TTL-expired at this epoch second (`null`: none). */
  readonly notExpiredAt: number | null;
  /** `ttl` to SET, or `null`. */
  readonly ttl: number | null;
}

/**
 * The conditional ADD that every write outside the refill path uses (spec
 * 02 §5.1, made exact): conditioned on every written limit's parameters,
 * its admission floor and its saturation ceiling, and on `rf` not being
 * older than the one the ceilings were computed from. A missing item or
 * attribute fails every comparison, so an ADD can never create a partial
 * item. Answers nothing on success (the caller advances what it knows by
 * its own deltas, see {@linkcode afterPlain}: returning the new balances
 * costs DynamoDB and the client a serialization per admission) and
 * `ALL_OLD` on a failed condition.
 */
export function plainUpdate(
  table: string,
  w: PlainWrite,
): UpdateItemCommandInput {
  const e = new Expr();
  const add: string[] = [];
  const set: string[] = [];
  const cond: string[] = [];
  for (const l of w.limits) {
    const tk = e.n(bucketAttr(l.name, "tk"));
    if (l.take !== 0n) add.push(`${tk} ${e.num(-l.take)}`);
    if (l.count !== 0n) {
      add.push(`${e.n(bucketAttr(l.name, "tc"))} ${e.num(l.count)}`);
    }
    if (l.min !== null && l.max !== null) {
      // An empty range (min > max) can never hold, as the two comparisons.
      cond.push(
        l.min <= l.max
          ? `${tk} BETWEEN ${e.num(l.min)} AND ${e.num(l.max)}`
          : `${tk} >= ${e.num(l.min)} AND ${tk} <= ${e.num(l.max)}`,
      );
    } else if (l.min !== null) cond.push(`${tk} >= ${e.num(l.min)}`);
    else if (l.max !== null) cond.push(`${tk} <= ${e.num(l.max)}`);
    if (l.params) {
      cond.push(
        `${e.n(bucketAttr(l.name, "cp"))} = ${e.num(l.params.cp)}`,
        `${e.n(bucketAttr(l.name, "ra"))} = ${e.num(l.params.ra)}`,
        `${e.n(bucketAttr(l.name, "rp"))} = ${e.num(l.params.rp)}`,
      );
    }
    if (l.window !== undefined) {
      cond.push(`${e.n(bucketAttr(l.name, "ws"))} = ${e.num(l.window)}`);
    }
  }
  if (w.wcu !== 0n) {
    add.push(
      `${e.n(bucketAttr(WCU_LIMIT_NAME, "tk"))} ${e.num(-w.wcu)}`,
      `${e.n(bucketAttr(WCU_LIMIT_NAME, "tc"))} ${e.num(w.wcu)}`,
    );
  }
  if (w.rfMin !== null) cond.push(`${e.n("rf")} >= ${e.num(w.rfMin)}`);
  else cond.push(`attribute_exists(${e.n("rf")})`);
  if (w.notExpiredAt !== null) {
    const ttl = e.n("ttl");
    cond.push(
      `(attribute_not_exists(${ttl}) OR ${ttl} > ${e.num(w.notExpiredAt)})`,
    );
  }
  if (w.ttl !== null) set.push(`${e.n("ttl")} = ${e.num(w.ttl)}`);
  if (add.length === 0 && set.length === 0) {
    throw new RangeError("Cannot build a plain write that changes nothing");
  }
  return {
    TableName: table,
    Key: bucketKey(w.ref),
    UpdateExpression: updateExpression({ set, add }),
    ConditionExpression: cond.join(" AND "),
    ...e.attrs(),
    ReturnValuesOnConditionCheckFailure: "ALL_OLD",
  };
}

/**
 * What this process knows of the item after a successful
 * {@linkcode plainUpdate}: `known` moved by the write's own deltas. The
 * write's conditions held, so the parameters are unchanged and `rf` is at
 * least the known one (an older `rf` only makes the next ceiling more
 * cautious). Other writers' charges are not seen until a failed condition
 * brings the item back (`ALL_OLD`): a guess that is too high costs one
 * failed write, never an admission, since every write is conditioned on
 * the stored balance.
 */
export function afterPlain(known: BucketItem, w: PlainWrite): BucketItem {
  const limits = new Map(known.limits);
  const move = (name: string, take: bigint, count: bigint): void => {
    const old = limits.get(name);
    if (old) {
      limits.set(name, {
        ...old,
        tk: old.tk - take,
        tc: (old.tc ?? 0n) + count,
      });
    }
  };
  for (const l of w.limits) move(l.name, l.take, l.count);
  if (w.wcu !== 0n) move(WCU_LIMIT_NAME, w.wcu, w.wcu);
  return { ...known, limits, ttl: w.ttl ?? known.ttl };
}

/**
 * The write that puts new parameters on an existing bucket item: the refill
 * since `rf` is settled first under the smaller capacity and the slower rate
 * of the old and new parameters (the change time is unknown to the bucket,
 * so neither a raised rate nor a raised capacity is credited for the time
 * before it), under the `rf` lock. `null` when no limit of `limits` is on
 * the item.
 */
export function settleWrite(
  table: string,
  ref: BucketRef,
  item: BucketItem,
  limits: readonly Limit[],
  ttl: number | "remove" | null,
  nowMs: number,
): UpdateItemCommandInput | null {
  // Calendar quotas are not refilled: the next charge writes their new parameters.
  const present = limits.filter((l) =>
    item.limits.has(l.name) && !l.calendar &&
    ((item.limits.get(l.name) as StoredLimit).ws ?? null) === null
  );
  if (present.length === 0) return null;
  const now = BigInt(nowMs);
  const shards = item.shardCount;
  const olds = present.map((l) => item.limits.get(l.name) as StoredLimit);
  // The item's other limits (not in this config) move with its one rf.
  const { plan, others } = settleRefill(
    item,
    shards,
    new Set(present.map((l) => l.name)),
    now,
    present.map((l, i) => {
      const old = olds[i] as StoredLimit;
      const next = paramsOf(l, shards);
      return {
        tk: old.tk,
        p: sameParams(old.params, paramsOf(l))
          ? next
          : settleParams(shardParams(old.params, shards), next),
      };
    }),
  );
  const planned: PlannedLimit[] = present.map((l, i) => {
    const old = olds[i] as StoredLimit;
    return {
      name: l.name,
      params: paramsOf(l),
      paramsBefore: old.params,
      tkBefore: old.tk,
      tkAfter: plan.tk[i] as bigint,
      consumed: 0n,
      capped: true,
      exact: plan.clamped[i] === true,
      check: false,
    };
  });
  planned.push(...others);
  if (item.limits.has(WCU_LIMIT_NAME)) {
    planned.push(wcuPlanned(item, plan.rf, 0n));
  }
  const tx = slowPathWrite(table, {
    ref,
    create: false,
    expectedRf: item.rf,
    now: plan.rf,
    limits: planned,
    cascade: item.cascade,
    parentId: item.parentId,
    shardCount: item.shardCount,
    ttl,
  });
  return tx.Update as UpdateItemCommandInput;
}

/**
 * The hidden `wcu` limit's part of a write under the `rf` lock: refilled
 * from `rf` to `rfNext` (as every limit of the item is), minus `take`
 * millitokens; a full bucket when the item has none yet.
 */
export function wcuPlanned(
  item: BucketItem | null,
  rfNext: bigint,
  take: bigint,
): PlannedLimit {
  const wcu = item?.limits.get(WCU_LIMIT_NAME);
  const now = wcu && item
    ? refill(wcu.tk, item.rf, rfNext, WCU_PARAMS).tk
    : WCU_PARAMS.cp;
  return {
    name: WCU_LIMIT_NAME,
    params: WCU_PARAMS,
    tkBefore: wcu ? wcu.tk : null,
    tkAfter: now - take,
    consumed: take,
    check: false,
  };
}
