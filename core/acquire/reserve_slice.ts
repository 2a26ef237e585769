/**
 * The slices of the local reserve (`acquire/reserve.ts`) and the small
 * helpers that move tokens in and out of them.
 *
 * @module
 */
import type { BucketParams } from "../bucket.ts";
import type { BucketRef } from "../bucket_item.ts";
import type { BucketWriter } from "../bucket_writer.ts";
import type { Side } from "./plan.ts";

/** A slice of one bucket held in memory. */
export interface Slice {
  readonly id: number;
  readonly key: string;
  readonly ref: BucketRef;
  readonly shards: number;
  /** Stored (undivided) parameters per limit when taken. */
  readonly params: Map<string, BucketParams>;
  /** Millitokens usable now, per limit. */
  readonly left: Map<string, bigint>;
  /** Millitokens lent to leases (a rollback returns at most this). */
  readonly out: Map<string, bigint>;
  expiresAt: number;
  dropped: boolean;
}

/** One side of a call and the slice of its bucket, if any. */
export interface Plan {
  side: Side;
  key: string;
  slice: Slice | undefined;
}

/** The key of a bucket (its slice). */
export function bucketKey(
  ns: string,
  entityId: string,
  resource: string,
): string {
  return `${ns}\u0000${entityId}\u0000${resource}`;
}

/** The key of a bucket limit's recent demand. */
export function demandKey(
  entityId: string,
  resource: string,
  name: string,
): string {
  return `${entityId}\u0000${resource}\u0000${name}`;
}

/** The key of one item (a shard). */
export function refKey(ref: BucketRef): string {
  return `${bucketKey(ref.ns, ref.entityId, ref.resource)}\u0000${ref.shard}`;
}

/** Millitokens per limit as tokens (zeros left out). */
export function tokens(m: ReadonlyMap<string, bigint>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [n, a] of m) if (a !== 0n) out[n] = Number(a) / 1000;
  return out;
}

/** Adds `a` to entry `n`. */
export function addTo(m: Map<string, bigint>, n: string, a: bigint): void {
  m.set(n, (m.get(n) ?? 0n) + a);
}

/** Adds every entry of `m` to `into`. */
export function addAll(
  into: Map<string, bigint>,
  m: ReadonlyMap<string, bigint>,
): void {
  for (const [n, a] of m) addTo(into, n, a);
}

/** Whether the slice holds every amount of a charge. */
export function covers(s: Slice, charge: ReadonlyMap<string, bigint>): boolean {
  for (const [n, a] of charge) if ((s.left.get(n) ?? 0n) < a) return false;
  return true;
}

/** Lends (`sign` 1) or takes back (`sign` −1) a charge from a slice. */
export function move(
  s: Slice,
  charge: ReadonlyMap<string, bigint>,
  sign: bigint,
): void {
  for (const [n, a] of charge) {
    addTo(s.left, n, -sign * a);
    addTo(s.out, n, sign * a);
  }
}

/**
 * Gives `back` to an item through the capped give-back path, once more
 * after a give-back lost every race (it then placed nothing); whether it
 * was placed.
 */
export async function placeBack(
  writer: BucketWriter,
  ref: BucketRef,
  shards: number,
  back: ReadonlyMap<string, bigint>,
  wcu = 0n,
): Promise<boolean> {
  const deltas = new Map([...back].map(([n, a]) => [n, -a]));
  for (let round = 0; round < 3; round++) {
    if ((await writer.apply(ref, shards, deltas, wcu)) === 0n) return true;
    await writer.backoff(round + 2);
  }
  return false;
}
