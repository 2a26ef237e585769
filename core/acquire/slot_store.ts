/**
 * The port of concurrency slots (issue 14): one item per entity, resource
 * and concurrency limit, holding for each slot `i` its expiry (`cs_{i}`,
 * epoch ms) and its holder (`ch_{i}`, a random id). A slot is free when it
 * has no expiry or its expiry has passed. Taking a slot is one conditional
 * write (the slot is free now); freeing it is one conditional write (the
 * slot is still ours). So at no time do more than `max` holders whose
 * expiry has not passed hold a slot, and no background process is needed:
 * a crashed holder's slot is free once its expiry passes.
 *
 * Stored format (NEW item type; the Python client never reads it):
 * `PK = {ns}/CONCURRENCY#{entity}#{resource}`, `SK = #SLOTS#{name}`,
 * `cs_{i}` (N), `ch_{i}` (S), `max` (N, informational), `ttl` (N, epoch
 * seconds, two days after the last take: DynamoDB's TTL removes an idle
 * item). No GSI attribute is set.
 *
 * @module
 */

/** Identifies one slot item. */
export interface SlotRef {
  /** Namespace id. */
  readonly ns: string;
  /** Entity id. */
  readonly entityId: string;
  /** Resource. */
  readonly resource: string;
  /** Concurrency limit name. */
  readonly name: string;
}

/** One slot as stored. */
export interface SlotState {
  /** Epoch ms after which the slot is free. */
  readonly expiry: number;
  /** The holder's id. */
  readonly holder: string;
}

/** A take of one slot. */
export interface SlotTake {
  /** Slot index, from 0. */
  readonly slot: number;
  /** The new expiry (epoch ms). */
  readonly expiry: number;
  /** The new holder's id. */
  readonly holder: string;
  /** The taker's clock: the slot must be free at this time. */
  readonly now: number;
  /** The limit's `max`, stored for operators. */
  readonly max: number;
  /** `ttl` of the item, epoch seconds. */
  readonly ttl: number;
}

/** What a take did. */
export type TakeResult =
  | { readonly ok: true }
  /** The slot was held; `slots` is the item as stored (every slot). */
  | { readonly ok: false; readonly slots: ReadonlyMap<number, SlotState> };

/** Slot item I/O. */
export interface SlotStore {
  /** Takes a slot if it is free at `take.now`. */
  take(ref: SlotRef, take: SlotTake): Promise<TakeResult>;
  /** Frees a slot if `holder` still holds it with `expiry`; otherwise does nothing. */
  release(
    ref: SlotRef,
    slot: number,
    holder: string,
    expiry: number,
  ): Promise<void>;
}

/** `{ns}/CONCURRENCY#{entity}#{resource}` */
export function pkSlots(ref: SlotRef): string {
  return `${ref.ns}/CONCURRENCY#${ref.entityId}#${ref.resource}`;
}

/** `#SLOTS#{name}` */
export function skSlots(ref: SlotRef): string {
  return `#SLOTS#${ref.name}`;
}

/** Decodes the slots of a stored item (attribute values as numbers and strings). */
export function decodeSlots(
  item: Readonly<Record<string, { N?: string; S?: string } | undefined>>,
): Map<number, SlotState> {
  const out = new Map<number, SlotState>();
  for (const [attr, v] of Object.entries(item)) {
    const m = /^cs_(\d+)$/.exec(attr);
    if (!m || v?.N === undefined) continue;
    const i = Number(m[1]);
    out.set(i, { expiry: Number(v.N), holder: item[`ch_${i}`]?.S ?? "" });
  }
  return out;
}
