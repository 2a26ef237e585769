/**
 * {@linkcode BucketStore} in memory, with DynamoDB's semantics for every
 * write the algorithm makes: each write is atomic and applies only when
 * every condition it states holds (a comparison on a missing attribute
 * fails, as in DynamoDB), `ADD` creates a missing attribute, a failed
 * condition answers the stored item, and a transaction applies all of its
 * writes or none. Items are kept as DynamoDB attribute maps in the stored
 * format, so the same decoder reads both stores.
 *
 * Hooks let tests delay a write (interleaving concurrent calls) and inject
 * faults before a write applies or after it applied (the answer lost).
 *
 * @module
 */
import type { AttributeValue } from "@aws-sdk/client-dynamodb";
import type {
  BucketStore,
  BucketWrite,
  EntityLink,
  ReadResult,
  TransactResult,
  WriteResult,
} from "../acquire/bucket_store.ts";
import {
  type BucketItem,
  type BucketRef,
  decodeBucket,
  type PlainWrite,
  slowPathWrite,
  type SlowWrite,
} from "../bucket_item.ts";
import type { BucketParams } from "../bucket.ts";
import type { Item } from "../expr.ts";
import { bucketAttr, pkBucket, SK } from "../keys.ts";
import { WCU_LIMIT_NAME } from "../validation.ts";

/** Where a hook runs. */
export type MemoryStorePhase = "before" | "after";

/** Options of {@linkcode MemoryBucketStore}. */
export interface MemoryBucketStoreOptions {
  /** Name shown in errors. @default "memory" */
  readonly name?: string;
  /**
   * Runs around every read and write: `before` (throwing fails the call
   * with nothing applied; awaiting delays it) and `after` a write applied
   * (throwing loses the answer of an applied write).
   */
  readonly hook?: (
    phase: MemoryStorePhase,
    op: "read" | "write" | "transact",
    writes: readonly BucketWrite[],
  ) => void | Promise<void>;
}

function key(pk: string, sk: string): string {
  return `${pk}\u0000${sk}`;
}

function refKey(ref: BucketRef): string {
  return key(pkBucket(ref.ns, ref.entityId, ref.resource, ref.shard), SK.STATE);
}

function refOf(w: BucketWrite): BucketRef {
  return w.kind === "plain" || w.kind === "slow" ? w.write.ref : w.ref;
}

function n(item: Item, name: string): bigint | null {
  const a = item[name];
  return a && "N" in a && typeof a.N === "string" ? BigInt(a.N) : null;
}

function setN(item: Item, name: string, v: bigint): void {
  item[name] = { N: String(v) };
}

/** `ADD name v`: a missing attribute counts as 0. */
function addN(item: Item, name: string, v: bigint): void {
  setN(item, name, (n(item, name) ?? 0n) + v);
}

function paramsHold(item: Item, limit: string, p: BucketParams): boolean {
  return n(item, bucketAttr(limit, "cp")) === p.cp &&
    n(item, bucketAttr(limit, "ra")) === p.ra &&
    n(item, bucketAttr(limit, "rp")) === p.rp;
}

function plainHolds(item: Item | undefined, w: PlainWrite): boolean {
  if (!item) return false;
  for (const l of w.limits) {
    const tk = n(item, bucketAttr(l.name, "tk"));
    if ((l.min !== null || l.max !== null) && tk === null) return false;
    if (l.min !== null && (tk as bigint) < l.min) return false;
    if (l.max !== null && (tk as bigint) > l.max) return false;
    if (l.params && !paramsHold(item, l.name, l.params)) return false;
    if (
      l.window !== undefined && n(item, bucketAttr(l.name, "ws")) !== l.window
    ) return false;
  }
  const rf = n(item, "rf");
  if (rf === null || (w.rfMin !== null && rf < w.rfMin)) return false;
  if (w.notExpiredAt !== null) {
    const ttl = n(item, "ttl");
    if (ttl !== null && ttl <= BigInt(w.notExpiredAt)) return false;
  }
  return true;
}

function applyPlain(item: Item, w: PlainWrite): void {
  for (const l of w.limits) {
    if (l.take !== 0n) addN(item, bucketAttr(l.name, "tk"), -l.take);
    if (l.count !== 0n) addN(item, bucketAttr(l.name, "tc"), l.count);
  }
  if (w.wcu !== 0n) {
    addN(item, bucketAttr(WCU_LIMIT_NAME, "tk"), -w.wcu);
    addN(item, bucketAttr(WCU_LIMIT_NAME, "tc"), w.wcu);
  }
  if (w.ttl !== null) setN(item, "ttl", BigInt(w.ttl));
}

function slowHolds(item: Item | undefined, w: SlowWrite): boolean {
  if (w.create) return item === undefined;
  if (!item || n(item, "rf") !== w.expectedRf) return false;
  for (const l of w.limits) {
    const tk = n(item, bucketAttr(l.name, "tk"));
    if (l.tkBefore === null) {
      if (tk !== null) return false;
    } else {
      if (tk === null) {
        // Every comparison on a missing attribute fails.
        if (((l.check ?? true) && l.consumed > 0n) || l.exact || l.capped) {
          return false;
        }
      } else {
        const delta = l.tkAfter - l.tkBefore;
        if ((l.check ?? true) && l.consumed > 0n && tk < -delta) return false;
        if (l.exact) {
          if (tk !== l.tkBefore) return false;
        } else if (l.capped && tk > l.tkBefore) return false;
      }
    }
    if (l.paramsBefore && !paramsHold(item, l.name, l.paramsBefore)) {
      return false;
    }
    if (
      l.window && n(item, bucketAttr(l.name, "ws")) !== l.window.before
    ) return false;
  }
  return true;
}

function applySlow(item: Item, w: SlowWrite): void {
  setN(item, "rf", w.now);
  item["cascade"] = { BOOL: w.cascade };
  if (w.parentId !== null) item["parent_id"] = { S: w.parentId };
  else delete item["parent_id"];
  if (typeof w.ttl === "number") setN(item, "ttl", BigInt(w.ttl));
  else if (w.ttl === "remove") delete item["ttl"];
  for (const l of w.limits) {
    setN(item, bucketAttr(l.name, "cp"), l.params.cp);
    setN(item, bucketAttr(l.name, "ra"), l.params.ra);
    setN(item, bucketAttr(l.name, "rp"), l.params.rp);
    if (l.tkBefore === null) {
      setN(item, bucketAttr(l.name, "tk"), l.tkAfter);
      setN(item, bucketAttr(l.name, "tc"), l.consumed);
    } else {
      const delta = l.tkAfter - l.tkBefore;
      if (delta !== 0n) addN(item, bucketAttr(l.name, "tk"), delta);
      if (l.consumed !== 0n) addN(item, bucketAttr(l.name, "tc"), l.consumed);
    }
    if (l.window === null) {
      delete item[bucketAttr(l.name, "ws")];
      delete item[bucketAttr(l.name, "we")];
    } else if (l.window) {
      setN(item, bucketAttr(l.name, "ws"), l.window.start);
      setN(item, bucketAttr(l.name, "we"), l.window.end);
    }
  }
}

function clone(item: Item): Item {
  const out: Item = {};
  for (const [k, v] of Object.entries(item)) {
    out[k] = { ...v } as AttributeValue;
  }
  return out;
}

/** Bucket items in memory (see the module documentation). */
export class MemoryBucketStore implements BucketStore {
  readonly name: string;
  readonly #items = new Map<string, Item>();
  readonly #links = new Map<string, EntityLink>();
  readonly #hook: MemoryBucketStoreOptions["hook"];

  /** An empty store. */
  constructor(options: MemoryBucketStoreOptions = {}) {
    this.name = options.name ?? "memory";
    this.#hook = options.hook;
  }

  /** Sets (or with `null` removes) the cascade link of an entity. */
  setLink(ns: string, entityId: string, link: EntityLink | null): void {
    const k = `${ns}\u0000${entityId}`;
    if (link) this.#links.set(k, link);
    else this.#links.delete(k);
  }

  /** The stored item of a bucket, decoded, or `null`. */
  get(ref: BucketRef): BucketItem | null {
    const it = this.#items.get(refKey(ref));
    return it ? decodeBucket(it, ref.shard) : null;
  }

  /**
   * The stored attribute map of a bucket (a copy), or `null`.
   * @ignore Low-level: DynamoDB attribute values.
   */
  raw(ref: BucketRef): Item | null {
    const it = this.#items.get(refKey(ref));
    return it ? clone(it) : null;
  }

  /**
   * Replaces or deletes the stored attribute map of a bucket (another
   * writer, a TTL deletion).
   * @ignore Low-level: DynamoDB attribute values.
   */
  putRaw(ref: BucketRef, item: Item | null): void {
    if (item) this.#items.set(refKey(ref), clone(item));
    else this.#items.delete(refKey(ref));
  }

  async read(
    refs: readonly BucketRef[],
    entity?: { readonly ns: string; readonly entityId: string },
  ): Promise<ReadResult> {
    await this.#hook?.("before", "read", []);
    const items = refs.map((r) => this.get(r));
    const link = entity
      ? this.#links.get(`${entity.ns}\u0000${entity.entityId}`) ?? null
      : null;
    return { items, link };
  }

  async write(
    w: BucketWrite,
    options: { readonly answer?: boolean } = {},
  ): Promise<WriteResult> {
    await this.#hook?.("before", "write", [w]);
    const ref = refOf(w);
    const k = refKey(ref);
    const item = this.#items.get(k);
    if (!this.#holds(item, w)) {
      return { ok: false, old: item ? decodeBucket(item, ref.shard) : null };
    }
    const after = this.#apply(k, item, w);
    await this.#hook?.("after", "write", [w]);
    return {
      ok: true,
      item: options.answer ? decodeBucket(after, ref.shard) : null,
    };
  }

  async transact(ws: readonly BucketWrite[]): Promise<TransactResult> {
    await this.#hook?.("before", "transact", ws);
    const keys = ws.map((w) => refKey(refOf(w)));
    if (new Set(keys).size !== keys.length) {
      throw Object.assign(
        new Error(
          "Transaction request cannot include multiple operations on one item",
        ),
        { name: "ValidationException" },
      );
    }
    const items = keys.map((k) => this.#items.get(k));
    const holds = ws.map((w, i) => this.#holds(items[i], w));
    if (!holds.every(Boolean)) {
      return {
        ok: false,
        olds: ws.map((w, i) => {
          const it = items[i];
          return !holds[i] && it ? decodeBucket(it, refOf(w).shard) : null;
        }),
      };
    }
    ws.forEach((w, i) => this.#apply(keys[i] as string, items[i], w));
    await this.#hook?.("after", "transact", ws);
    return { ok: true };
  }

  #holds(item: Item | undefined, w: BucketWrite): boolean {
    switch (w.kind) {
      case "plain":
        return plainHolds(item, w.write);
      case "slow":
        return slowHolds(item, w.write);
      case "debt":
        return true;
      case "shards":
        return item !== undefined && n(item, "shard_count") === BigInt(w.from);
    }
  }

  #apply(k: string, item: Item | undefined, w: BucketWrite): Item {
    if (w.kind === "slow" && w.write.create) {
      const put = slowPathWrite(this.name, w.write).Put?.Item as Item;
      const stored = clone(put);
      this.#items.set(k, stored);
      return stored;
    }
    const ref = refOf(w);
    const target = item ?? {
      PK: { S: pkBucket(ref.ns, ref.entityId, ref.resource, ref.shard) },
      SK: { S: SK.STATE },
    };
    switch (w.kind) {
      case "plain":
        applyPlain(target, w.write);
        break;
      case "slow":
        applySlow(target, w.write);
        break;
      case "debt":
        for (const [name, d] of w.deltas) {
          if (d === 0n) continue;
          addN(target, bucketAttr(name, "tk"), -d);
          addN(target, bucketAttr(name, "tc"), d);
        }
        break;
      case "shards":
        setN(target, "shard_count", BigInt(w.to));
        break;
    }
    this.#items.set(k, target);
    return target;
  }
}
