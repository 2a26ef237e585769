/**
 * The port between the admission algorithm and the table: every read and
 * write of bucket items the limiter makes, as typed operations. The
 * algorithm (`BucketWriter`, the limiter's slow path and cascade) decides;
 * a store only applies the conditions each write states. Two stores
 * implement it with the same semantics: DynamoDB
 * (`core/store/dynamo_bucket_store.ts`, the stored format of schema 0.10)
 * and memory (`core/store/memory_bucket_store.ts`, exported on the
 * `./testing` subpath); `tests/bucket_store_contract.ts` runs on both.
 *
 * Failures other than a failed condition are thrown as errors whose `name`
 * is DynamoDB's (`TransactionConflictException`, `ThrottlingException`,
 * ...), so the algorithm classifies them the same way on either store.
 *
 * @module
 */
import type {
  BucketItem,
  BucketRef,
  PlainWrite,
  SlowWrite,
} from "../bucket_item.ts";

/** One write of one bucket item. */
export type BucketWrite =
  /** Conditional ADDs: a charge, a lease delta or a give-back. */
  | { readonly kind: "plain"; readonly write: PlainWrite }
  /** A create, or a refill under the `rf` lock. */
  | { readonly kind: "slow"; readonly write: SlowWrite }
  /** Unconditional ADDs (`tk −d`, `tc +d`): only a debt that lost every race. */
  | {
    readonly kind: "debt";
    readonly ref: BucketRef;
    readonly deltas: ReadonlyMap<string, bigint>;
  }
  /** `shard_count` from `from` to `to` on shard 0. */
  | {
    readonly kind: "shards";
    readonly ref: BucketRef;
    readonly from: number;
    readonly to: number;
  };

/** What a single write did. */
export type WriteResult =
  /** Applied; `item` is the stored item after it when asked for (`answer`). */
  | { readonly ok: true; readonly item: BucketItem | null }
  /** A condition failed; nothing applied; `old` is the stored item (or `null`: none). */
  | { readonly ok: false; readonly old: BucketItem | null };

/** What an all-or-nothing write did. */
export type TransactResult =
  | { readonly ok: true }
  /**
   * A condition failed; nothing applied. `olds[i]` is the stored item of
   * write `i` when its condition failed, else `null`.
   */
  | { readonly ok: false; readonly olds: readonly (BucketItem | null)[] };

/** The denormalised cascade link of an entity, from its metadata record. */
export interface EntityLink {
  /** Whether acquires also charge the parent. */
  readonly cascade: boolean;
  /** Parent entity id, or `null`. */
  readonly parentId: string | null;
}

/** What {@linkcode BucketStore.read} returns. */
export interface ReadResult {
  /** One per ref, in order: the item, or `null` when there is none. */
  readonly items: readonly (BucketItem | null)[];
  /** The entity's link when asked for (`null`: no such entity). */
  readonly link: EntityLink | null;
}

/** Bucket item I/O of the admission algorithm. */
export interface BucketStore {
  /** Name shown in errors (the table name for DynamoDB). */
  readonly name: string;
  /**
   * Reads items strongly consistently, and with `entity` that entity's
   * cascade link, in one round trip.
   */
  read(
    refs: readonly BucketRef[],
    entity?: { readonly ns: string; readonly entityId: string },
  ): Promise<ReadResult>;
  /** Applies one write if its conditions hold. `answer`: return the item after it. */
  write(
    w: BucketWrite,
    options?: { readonly answer?: boolean },
  ): Promise<WriteResult>;
  /** Applies every write or none (one write: the same as {@linkcode write}). */
  transact(ws: readonly BucketWrite[]): Promise<TransactResult>;
}
