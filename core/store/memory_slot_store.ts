/**
 * {@linkcode SlotStore} in memory, with the DynamoDB store's semantics: a
 * take applies only when the slot is free at the taker's time, a release
 * only when the slot is still the holder's. Share one between the limiters
 * of a test as they would share a table.
 *
 * @module
 */
import {
  pkSlots,
  skSlots,
  type SlotRef,
  type SlotState,
  type SlotStore,
  type SlotTake,
  type TakeResult,
} from "../acquire/slot_store.ts";

/** Slot items in memory. */
export class MemorySlotStore implements SlotStore {
  readonly #items = new Map<string, Map<number, SlotState>>();
  readonly #hook:
    | ((op: "take" | "release") => void | Promise<void>)
    | undefined;

  /** An empty store; `hook` runs before each call (throw to fail it, await to delay it). */
  constructor(
    options: { hook?: (op: "take" | "release") => void | Promise<void> } = {},
  ) {
    this.#hook = options.hook;
  }

  #slots(ref: SlotRef): Map<number, SlotState> {
    const k = `${pkSlots(ref)}\u0000${skSlots(ref)}`;
    let m = this.#items.get(k);
    if (!m) this.#items.set(k, m = new Map());
    return m;
  }

  /** The stored slots of an item (a copy). */
  slots(ref: SlotRef): Map<number, SlotState> {
    return new Map(this.#slots(ref));
  }

  async take(ref: SlotRef, t: SlotTake): Promise<TakeResult> {
    await this.#hook?.("take");
    const m = this.#slots(ref);
    const cur = m.get(t.slot);
    if (cur && cur.expiry > t.now) return { ok: false, slots: new Map(m) };
    m.set(t.slot, { expiry: t.expiry, holder: t.holder });
    return { ok: true };
  }

  async release(
    ref: SlotRef,
    slot: number,
    holder: string,
    expiry: number,
  ): Promise<void> {
    await this.#hook?.("release");
    const m = this.#slots(ref);
    const cur = m.get(slot);
    if (cur && cur.holder === holder && cur.expiry === expiry) m.delete(slot);
  }
}
