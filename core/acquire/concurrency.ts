/**
 * Concurrency (in-flight) limits on an acquire (issue 14). Before the rate
 * limits are charged, the acquire takes one slot of each concurrency limit
 * (one conditional write per limit, see `slot_store.ts`); when the rate
 * write refuses or fails, the slots are freed again (all or nothing, as the
 * cascade parent's charge on the fast path); when the lease ends (commit or
 * rollback) they are freed; a holder that never ends its lease loses its
 * slots at its deadline (`leaseMs` after the start of the acquire), which
 * is also the lease's deadline (see `lease_deadline.ts`).
 *
 * DynamoDB calls: an acquire with concurrency limits sends one write per
 * concurrency limit, then the rate write (1 when warm): 2 in sequence for
 * one limit. A slot that another holder took meanwhile costs one more
 * write (the failed write answers the stored item). Ending the lease sends
 * one write per slot, after the lease's own write. An acquire without
 * concurrency limits sends nothing more.
 *
 * The limits apply to the entity and resource of the acquire only: a
 * cascade parent's rate limits are charged as usual, it holds no slot.
 *
 * @module
 */
import { BoundedMap } from "../_bounded_map.ts";
import type { Clock } from "../clock.ts";
import { ConcurrencyLimit } from "../concurrency_limit.ts";
import { RateLimitExceeded, ValidationError } from "../errors.ts";
import type { Lease } from "../lease.ts";
import { Limit } from "../limit.ts";
import type { LimitStatus } from "../models.ts";
import { withGrace } from "../transport.ts";
import type { SlotRef, SlotState, SlotStore } from "./slot_store.ts";

/** Writes a take may send before the acquire is refused as contended. */
const MAX_TAKES = 4;
/** Seconds the slot item lives after the last take (DynamoDB TTL). */
const SLOT_TTL_S = 2 * 86_400;
/** Time a give-back of slots may take after the caller's deadline passed. */
const RELEASE_GRACE_MS = 1000;

/** The limiter's `slotStore` option. */
export interface SlotStoreOptions {
  /**
   * Where concurrency slots live. @default the repository's table (a
   * `MemorySlotStore` of its own on a memory source; share one between
   * the limiters of a test)
   */
  readonly slotStore?: SlotStore;
}

/** What the limiter hands the concurrency step. */
export interface SlotContext {
  /** Slot items. */
  readonly store: SlotStore;
  /** The limiter's clock. */
  readonly clock: Clock;
  /** Random numbers in [0, 1) (slot choice). */
  readonly random: () => number;
  /** Namespace id. */
  readonly namespaceId: string;
  /** Reports a release that failed (the slot then frees at its expiry). */
  readonly onError: (error: unknown, context: string) => void;
  /** Slots as last seen per item (from failed takes and own takes). */
  readonly known: BoundedMap<string, Map<number, SlotState>>;
}

/** A slot this process holds. */
export interface HeldSlot {
  /** The item. */
  readonly ref: SlotRef;
  /** Slot index. */
  readonly slot: number;
  /** Holder id. */
  readonly holder: string;
  /** Expiry, epoch ms. */
  readonly expiry: number;
}

/** A new context (one per limiter). */
export function createSlotContext(
  options: Omit<SlotContext, "known">,
): SlotContext {
  return { ...options, known: new BoundedMap(10_000) };
}

/**
 * Checks an acquire's `concurrency` option.
 *
 * @throws {ValidationError} not an array of `Limit.concurrent(...)` values with distinct names
 */
export function validateConcurrency(
  value: unknown,
): readonly ConcurrencyLimit[] {
  if (value === undefined) return [];
  if (
    !Array.isArray(value) || !value.every((v) => v instanceof ConcurrencyLimit)
  ) {
    throw new ValidationError(
      "concurrency",
      value,
      'must be an array of Limit.concurrent(...) values, e.g. [Limit.concurrent("inflight", 10, { leaseMs: 60000 })]',
    );
  }
  const names = new Set(value.map((l) => l.name));
  if (names.size !== value.length) {
    throw new ValidationError(
      "concurrency",
      value.map((l) => l.name).join(","),
      "each concurrency limit needs its own name",
    );
  }
  return value;
}

/** The shortest `leaseMs` of the limits, or `null`. */
export function shortestLease(
  limits: readonly ConcurrencyLimit[],
): number | null {
  return limits.length === 0 ? null : Math.min(...limits.map((l) => l.leaseMs));
}

function keyOf(ref: SlotRef): string {
  return `${ref.ns}\u0000${ref.entityId}\u0000${ref.resource}\u0000${ref.name}`;
}

function status(
  limit: ConcurrencyLimit,
  ref: SlotRef,
  slots: ReadonlyMap<number, SlotState>,
  now: number,
  contended: boolean,
): LimitStatus {
  let free = 0;
  let soonest = Infinity;
  for (let i = 0; i < limit.max; i++) {
    const s = slots.get(i);
    if (!s || s.expiry <= now) free++;
    else soonest = Math.min(soonest, s.expiry);
  }
  return {
    entityId: ref.entityId,
    resource: ref.resource,
    limitName: limit.name,
    // Shown as a bucket of `max` that comes back within `leaseMs`.
    limit: new Limit(
      limit.name,
      limit.max,
      limit.max,
      Math.max(1, Math.ceil(limit.leaseMs / 1000)),
    ),
    available: free,
    requested: 1,
    exceeded: true,
    retryAfterSeconds: contended || !Number.isFinite(soonest)
      ? 0.05
      : Math.max(0.001, (soonest - now) / 1000),
  };
}

/** Takes one slot of `limit`, or answers the refusal's status. */
async function takeOne(
  ctx: SlotContext,
  limit: ConcurrencyLimit,
  ref: SlotRef,
  holder: string,
  start: number,
): Promise<HeldSlot | LimitStatus> {
  const key = keyOf(ref);
  const expiry = start + limit.leaseMs;
  // The item as this call's last failed take showed it (the shared cache
  // may hold an older view from another call: only a hint for the first pick).
  let fresh: Map<number, SlotState> | null = null;
  for (let n = 0; n < MAX_TAKES; n++) {
    const now = ctx.clock.now();
    const known = fresh ?? ctx.known.get(key) ?? new Map<number, SlotState>();
    const free: number[] = [];
    let soonest = 0;
    for (let i = 0; i < limit.max; i++) {
      const s = known.get(i);
      if (!s || s.expiry <= now) free.push(i);
      else if (s.expiry < (known.get(soonest)?.expiry ?? Infinity)) soonest = i;
    }
    // Every slot held, as the stored item just showed: refused.
    if (free.length === 0 && fresh) {
      return status(limit, ref, known, now, false);
    }
    // Held as far as this process knows, which may be stale: try the one that frees first.
    const slot = free.length > 0
      ? free[Math.floor(ctx.random() * free.length)] as number
      : soonest;
    const r = await ctx.store.take(ref, {
      slot,
      expiry,
      holder,
      now,
      max: limit.max,
      ttl: Math.ceil(now / 1000) + SLOT_TTL_S,
    });
    if (r.ok) {
      const next = new Map(known);
      next.set(slot, { expiry, holder });
      ctx.known.set(key, next);
      return { ref, slot, holder, expiry };
    }
    fresh = new Map(r.slots);
    ctx.known.set(key, fresh);
  }
  return status(limit, ref, fresh ?? new Map(), ctx.clock.now(), true);
}

/** Frees slots; a failure is reported (each slot frees at its expiry anyway). */
export async function releaseSlots(
  ctx: SlotContext,
  held: readonly HeldSlot[],
): Promise<void> {
  await Promise.all(held.map(async (h) => {
    try {
      await withGrace(
        RELEASE_GRACE_MS,
        () => ctx.store.release(h.ref, h.slot, h.holder, h.expiry),
      );
      const known = ctx.known.get(keyOf(h.ref));
      if (known?.get(h.slot)?.holder === h.holder) known.delete(h.slot);
    } catch (e) {
      ctx.onError(e, "concurrency release");
    }
  }));
}

/**
 * Takes a slot of every limit (all or nothing), runs `admit` (the rate
 * limits), and ties the slots to the lease: freed when it ends, or right
 * away when `admit` throws.
 *
 * @throws {RateLimitExceeded} a concurrency limit has no free slot; nothing was taken
 */
export async function withSlots(
  ctx: SlotContext,
  limits: readonly ConcurrencyLimit[],
  target: { readonly entityId: string; readonly resource: string },
  start: number,
  admit: () => Promise<Lease>,
): Promise<Lease> {
  const holder = crypto.randomUUID();
  const held: HeldSlot[] = [];
  const refused: LimitStatus[] = [];
  try {
    // In sequence: a refusal by the first limit sends no write for the others.
    for (const limit of limits) {
      const ref: SlotRef = { ns: ctx.namespaceId, ...target, name: limit.name };
      const r = await takeOne(ctx, limit, ref, holder, start);
      if ("slot" in r) held.push(r);
      else {
        refused.push(r);
        break;
      }
    }
  } catch (e) {
    await releaseSlots(ctx, held);
    throw e;
  }
  if (refused.length > 0) {
    await releaseSlots(ctx, held);
    throw new RateLimitExceeded(refused);
  }
  let lease: Lease;
  try {
    lease = await admit();
  } catch (e) {
    await releaseSlots(ctx, held);
    throw e;
  }
  lease.setHold({
    deadline: start + (shortestLease(limits) as number),
    clock: ctx.clock,
  });
  lease.onEnd(() => releaseSlots(ctx, held));
  return lease;
}
