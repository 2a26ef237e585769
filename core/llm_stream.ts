/**
 * A stream meter for LLM gateways: wraps a provider's stream of chunks,
 * counts the tokens of each chunk onto the lease's limits, and stops the
 * stream when it would cross its budget. A proxy cannot stop a stream
 * midway; an in-process library can.
 *
 * - **Budget.** Per metered limit, the most tokens the call may use: by
 *   default what the lease holds for it when the stream starts (the
 *   estimate reserved at acquire, e.g. `otpm` = `max_tokens`), or a per-call
 *   `budget`. When a chunk would take a limit over it, the chunk is not
 *   passed on, `controller` (if given) is aborted and the iteration throws
 *   {@linkcode StreamBudgetExceeded}.
 * - **Chunk by chunk.** Tokens past what the lease holds are added to it
 *   at once (`lease.adjust`), so the lease never stands for less than the
 *   stream used, even if the process stops before the end.
 * - **Settle.** When the stream ends (finished, stopped, broken off by the
 *   consumer, or failed), each metered limit is set to what the stream used,
 *   giving back the unused part of the reservation (`settle: false` keeps
 *   it). Reconcile other limits (input tokens, cost) from the final usage
 *   report with `reconcileUsage`.
 *
 * Adjustments are written when the lease commits, like any `adjust`.
 *
 * @module
 */
import { StreamBudgetExceeded, ValidationError } from "./errors.ts";
import type { Lease } from "./lease.ts";
import { leaseHolds } from "./llm_usage.ts";

/** Options of {@linkcode meterStream}. */
export interface MeterStreamOptions<T> {
  /**
   * Whole tokens ≥ 0 a chunk uses per limit name, e.g.
   * `(c) => ({ otpm: c.tokens })`; the names are the metered limits (with
   * those of `budget`) and must be held by the lease.
   */
  readonly count: (chunk: T) => Readonly<Record<string, number>>;
  /**
   * The limits metered from the start, so a stream that yields no tokens
   * for one still settles it (gives its reservation back).
   * @default the names of `budget`, then each name as `count` first returns it
   */
  readonly limits?: readonly string[];
  /**
   * The most tokens the stream may use per limit name, `alreadyUsed`
   * included. @default what the lease holds for the name when the stream starts
   */
  readonly budget?: Readonly<Record<string, number>>;
  /**
   * Tokens of a metered limit used before the stream, counted against its
   * budget and kept at settle (e.g. the prompt, when `tpm` counts input and
   * output). @default 0 per name
   */
  readonly alreadyUsed?: Readonly<Record<string, number>>;
  /** Aborted with the {@linkcode StreamBudgetExceeded} when the stream is stopped (cancel the provider's request with its signal). */
  readonly controller?: AbortController;
  /** At the end, set each metered limit to what the stream used (give back the unused reservation). @default true */
  readonly settle?: boolean;
}

function wholeCounts(
  value: unknown,
  field: string,
): Readonly<Record<string, number>> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ValidationError(
      field,
      value,
      "must map limit names to whole numbers of tokens ≥ 0, such as { otpm: 12 }",
    );
  }
  for (const [n, v] of Object.entries(value)) {
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
      throw new ValidationError(
        `${field}.${n}`,
        v,
        "must be a whole number of tokens ≥ 0",
      );
    }
  }
  return value as Readonly<Record<string, number>>;
}

/**
 * Meters `chunks` onto `lease` (see the module doc): yields each chunk
 * after counting it, adjusts the lease as the stream goes, and stops before
 * a chunk that would cross the budget.
 *
 * @throws {StreamBudgetExceeded} a chunk would take a limit over its budget
 * @throws {ValidationError} `count` returned something other than whole token counts ≥ 0, or a name the lease does not hold
 *
 * @example Stop an answer at the output tokens reserved
 * ```ts
 * import assert from "node:assert/strict";
 * import { Limit, meterStream, StreamBudgetExceeded } from "@zae/limiter";
 * import { createTestLimiter } from "@zae/limiter/testing";
 *
 * const { limiter, source } = createTestLimiter();
 * source.setSystemDefaults([Limit.perMinute("otpm", 10_000)]);
 * const lease = await limiter.acquire({ entityId: "k", resource: "llm", consume: { otpm: 25 } });
 * async function* provider() {
 *   for (let i = 0; i < 10; i++) yield { text: "word ", tokens: 10 };
 * }
 * const out: string[] = [];
 * await assert.rejects(async () => {
 *   for await (const c of meterStream(lease, provider(), { count: (c) => ({ otpm: c.tokens }) })) {
 *     out.push(c.text);
 *   }
 * }, StreamBudgetExceeded);
 * assert.equal(out.length, 2); // the third chunk would have made 30 > 25
 * assert.equal(lease.consumed.otpm, 30); // what the provider produced is charged
 * await lease.commit();
 * ```
 */
export async function* meterStream<T>(
  lease: Lease,
  chunks: AsyncIterable<T>,
  options: MeterStreamOptions<T>,
): AsyncGenerator<T, void, undefined> {
  if (typeof options?.count !== "function") {
    throw new ValidationError(
      "count",
      options?.count,
      "must be a function from a chunk to its tokens per limit name",
    );
  }
  const budgets = wholeCounts(options.budget ?? {}, "budget");
  const before = wholeCounts(options.alreadyUsed ?? {}, "alreadyUsed");
  const holds = leaseHolds(lease);
  const used = new Map<string, number>();
  const charged = new Map<string, number>();
  const budget = new Map<string, number>();
  const track = (n: string): void => {
    if (used.has(n)) return;
    used.set(n, before[n] ?? 0);
    charged.set(n, holds[n] ?? 0);
    budget.set(n, budgets[n] ?? holds[n] ?? 0);
  };
  for (const n of Object.keys(budgets)) track(n);
  for (const n of options.limits ?? []) track(n);
  const difference = (pred: (d: number) => boolean): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const [n, u] of used) {
      const d = u - (charged.get(n) ?? 0);
      if (d !== 0 && pred(d)) out[n] = d;
    }
    return out;
  };
  const adjust = (d: Record<string, number>): void => {
    if (Object.keys(d).length === 0) return;
    lease.adjust(d);
    for (const [n, v] of Object.entries(d)) {
      charged.set(n, (charged.get(n) ?? 0) + v);
    }
  };
  const settle = (): void => {
    if ((options.settle ?? true) && lease.state === "open") {
      adjust(difference(() => true));
    }
  };
  let failed = false;
  try {
    for await (const chunk of chunks) {
      const inc = wholeCounts(options.count(chunk), "count(chunk)");
      for (const [n, v] of Object.entries(inc)) {
        track(n);
        used.set(n, (used.get(n) ?? 0) + v);
      }
      // The lease never stands for less than the stream used.
      adjust(difference((d) => d > 0));
      for (const [n, u] of used) {
        const b = budget.get(n) ?? 0;
        if (u > b) {
          const e = new StreamBudgetExceeded(n, b, u);
          options.controller?.abort(e);
          throw e;
        }
      }
      yield chunk;
    }
  } catch (e) {
    failed = true;
    throw e;
  } finally {
    if (!failed) settle();
    else {
      try {
        settle();
      } catch {
        // The stream's own error is the one to report.
      }
    }
  }
}
