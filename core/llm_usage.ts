/**
 * Token accounting for LLM gateways: a provider's usage report turned into
 * the per-limit adjustments of a lease (pure), and a stream meter that
 * adjusts a lease chunk by chunk and stops a stream that would cross its
 * budget (`llm_stream.ts`).
 *
 * The flow: acquire an estimate (`itpm`: the counted prompt, `otpm`:
 * `max_tokens`, `usd`: their price), call the model, then
 * {@linkcode reconcileUsage} sets each mapped limit of the lease to what
 * the report says was used (the delta against what the lease holds), so the
 * commit writes the difference once.
 *
 * Reports are read strictly: {@linkcode parseOpenAIUsage} takes the Chat
 * Completions shape (`prompt_tokens`, `completion_tokens`,
 * `prompt_tokens_details.cached_tokens`) and the Responses shape
 * (`input_tokens`, `output_tokens`, `input_tokens_details.cached_tokens`);
 * {@linkcode parseAnthropicUsage} takes Anthropic's (`input_tokens`,
 * `output_tokens`, `cache_read_input_tokens`, `cache_creation_input_tokens`).
 * A missing, non-number, negative or fractional count is a
 * {@linkcode UsageReportError} naming every such field.
 *
 * @module
 */
import {
  type UsageIssue,
  UsageReportError,
  ValidationError,
} from "./errors.ts";
import type { Lease } from "./lease.ts";

/** The token counts of one model call, normalized across providers (whole tokens ≥ 0). */
export interface TokenUsage {
  /** Input tokens neither read from nor written to a prompt cache. */
  readonly inputTokens: number;
  /** Input tokens read from the prompt cache. */
  readonly cachedInputTokens: number;
  /** Input tokens written to the prompt cache (Anthropic's cache creation; 0 for OpenAI). */
  readonly cacheWriteTokens: number;
  /** Output tokens (reasoning tokens included). */
  readonly outputTokens: number;
}

/** The result of a `safeParse*Usage` function. */
export type UsageParseResult =
  | { readonly ok: true; readonly value: TokenUsage }
  | { readonly ok: false; readonly issues: readonly UsageIssue[] };

type Obj = Readonly<Record<string, unknown>>;

function isObject(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A whole count ≥ 0 at `path`; `optional` accepts a missing or null field as 0. */
function count(
  o: Obj,
  key: string,
  path: string,
  issues: UsageIssue[],
  optional = false,
): number {
  const v = o[key];
  const at = `${path}.${key}`;
  if (v === undefined || v === null) {
    if (!optional) {
      issues.push({
        path: at,
        message: "is missing; expected a whole number of tokens ≥ 0",
      });
    }
    return 0;
  }
  if (typeof v !== "number" || !Number.isFinite(v)) {
    issues.push({
      path: at,
      message: `is ${
        typeof v === "number" ? String(v) : typeof v
      }; expected a whole number of tokens ≥ 0`,
    });
    return 0;
  }
  if (!Number.isSafeInteger(v) || v < 0) {
    issues.push({
      path: at,
      message: `is ${v}; expected a whole number of tokens ≥ 0`,
    });
    return 0;
  }
  return v;
}

/** `o[key]` when it is an object (`null` or missing: `null`); else an issue. */
function details(
  o: Obj,
  key: string,
  path: string,
  issues: UsageIssue[],
): Obj | null {
  const v = o[key];
  if (v === undefined || v === null) return null;
  if (!isObject(v)) {
    issues.push({ path: `${path}.${key}`, message: "is not an object" });
    return null;
  }
  return v;
}

function notObject(usage: unknown): UsageParseResult {
  return {
    ok: false,
    issues: [{
      path: "usage",
      message: `is ${
        usage === null
          ? "null"
          : Array.isArray(usage)
          ? "an array"
          : typeof usage
      }; expected the response's usage object`,
    }],
  };
}

/**
 * Reads an OpenAI `usage` object: Chat Completions (`prompt_tokens`,
 * `completion_tokens`, optional `prompt_tokens_details.cached_tokens`) or
 * Responses (`input_tokens`, `output_tokens`, optional
 * `input_tokens_details.cached_tokens`). The prompt count includes the
 * cached tokens; they are split out (`inputTokens` = prompt − cached).
 */
export function safeParseOpenAIUsage(usage: unknown): UsageParseResult {
  if (!isObject(usage)) return notObject(usage);
  const issues: UsageIssue[] = [];
  const chat = "prompt_tokens" in usage || "completion_tokens" in usage;
  const [inKey, outKey, detailKey] = chat
    ? ["prompt_tokens", "completion_tokens", "prompt_tokens_details"]
    : ["input_tokens", "output_tokens", "input_tokens_details"];
  const input = count(usage, inKey, "usage", issues);
  const output = count(usage, outKey, "usage", issues);
  const d = details(usage, detailKey, "usage", issues);
  const cached = d
    ? count(d, "cached_tokens", `usage.${detailKey}`, issues, true)
    : 0;
  if (cached > input) {
    issues.push({
      path: `usage.${detailKey}.cached_tokens`,
      message: `is ${cached}, more than usage.${inKey} (${input})`,
    });
  }
  if (issues.length > 0) return { ok: false, issues };
  return {
    ok: true,
    value: {
      inputTokens: input - cached,
      cachedInputTokens: cached,
      cacheWriteTokens: 0,
      outputTokens: output,
    },
  };
}

/**
 * Reads an Anthropic `usage` object: `input_tokens` (the uncached input),
 * `output_tokens`, and optional `cache_read_input_tokens` and
 * `cache_creation_input_tokens` (missing or null: 0).
 */
export function safeParseAnthropicUsage(usage: unknown): UsageParseResult {
  if (!isObject(usage)) return notObject(usage);
  const issues: UsageIssue[] = [];
  const input = count(usage, "input_tokens", "usage", issues);
  const output = count(usage, "output_tokens", "usage", issues);
  const read = count(usage, "cache_read_input_tokens", "usage", issues, true);
  const write = count(
    usage,
    "cache_creation_input_tokens",
    "usage",
    issues,
    true,
  );
  if (issues.length > 0) return { ok: false, issues };
  return {
    ok: true,
    value: {
      inputTokens: input,
      cachedInputTokens: read,
      cacheWriteTokens: write,
      outputTokens: output,
    },
  };
}

/**
 * {@linkcode safeParseOpenAIUsage}, throwing.
 *
 * @throws {UsageReportError} `USAGE_INVALID`, listing every bad field
 *
 * @example Chat Completions usage with cached prompt tokens
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseOpenAIUsage } from "@zae/limiter";
 *
 * const usage = parseOpenAIUsage({
 *   prompt_tokens: 1200,
 *   completion_tokens: 300,
 *   total_tokens: 1500,
 *   prompt_tokens_details: { cached_tokens: 1000 },
 * });
 * assert.deepEqual(usage, { inputTokens: 200, cachedInputTokens: 1000, cacheWriteTokens: 0, outputTokens: 300 });
 * ```
 */
export function parseOpenAIUsage(usage: unknown): TokenUsage {
  const r = safeParseOpenAIUsage(usage);
  if (!r.ok) throw new UsageReportError(r.issues, usage);
  return r.value;
}

/**
 * {@linkcode safeParseAnthropicUsage}, throwing.
 *
 * @throws {UsageReportError} `USAGE_INVALID`, listing every bad field
 *
 * @example A bad report names the field
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseAnthropicUsage, UsageReportError } from "@zae/limiter";
 *
 * assert.throws(
 *   () => parseAnthropicUsage({ input_tokens: 10, output_tokens: -1 }),
 *   (e) => e instanceof UsageReportError && e.field === "usage.output_tokens",
 * );
 * ```
 */
export function parseAnthropicUsage(usage: unknown): TokenUsage {
  const r = safeParseAnthropicUsage(usage);
  if (!r.ok) throw new UsageReportError(r.issues, usage);
  return r.value;
}

/** Which limit each kind of token is charged to (omit a kind to charge it nowhere). */
export interface UsageLimitNames {
  /** Input tokens (input per minute, `itpm`). Cache reads count only with `countCachedInput`. */
  readonly input?: string;
  /** Output tokens (`otpm`). */
  readonly output?: string;
  /** Input (as counted for `input`) plus output tokens (`tpm`). */
  readonly total?: string;
  /** The price of the call in the limit's unit (integer micro-dollars or cents), from `prices`. */
  readonly cost?: string;
}

/**
 * Prices in the cost limit's unit per million tokens of each kind, whole
 * numbers ≥ 0 (micro-dollars per million tokens are whole for every
 * published price: $2.50/M is 2_500_000).
 */
export interface TokenPrices {
  /** Per million uncached input tokens. */
  readonly input: number;
  /** Per million output tokens. */
  readonly output: number;
  /** Per million cache reads. @default the `input` price */
  readonly cachedInput?: number;
  /** Per million cache writes. @default the `input` price */
  readonly cacheWrite?: number;
}

/** How usage maps onto limits. */
export interface UsageChargeOptions {
  /** The limit of each token kind. */
  readonly limits: UsageLimitNames;
  /** Prices, required when `limits.cost` is set. */
  readonly prices?: TokenPrices;
  /**
   * Whether cache reads count toward the `input` and `total` limits
   * (Anthropic does not count them toward ITPM on most models; OpenAI
   * counts them toward TPM). Cache writes always count. @default false
   */
  readonly countCachedInput?: boolean;
}

function price(
  value: number | undefined,
  fallback: number,
  field: string,
): bigint {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v < 0) {
    throw new ValidationError(
      field,
      v,
      "must be a whole number ≥ 0 of cost units per million tokens (use micro-dollars for fractional cents)",
    );
  }
  return BigInt(v);
}

/**
 * Whole tokens (and cost units) per limit name that `usage` amounts to
 * under `options`. The cost is rounded up (a call never costs less than
 * its tokens' price). Pure.
 *
 * @throws {ValidationError} a price is missing or not a whole number ≥ 0
 *
 * @example Anthropic usage onto itpm, otpm and a micro-dollar budget
 * ```ts
 * import assert from "node:assert/strict";
 * import { usageCharges } from "@zae/limiter";
 *
 * const charges = usageCharges(
 *   { inputTokens: 100, cachedInputTokens: 5000, cacheWriteTokens: 0, outputTokens: 400 },
 *   {
 *     limits: { input: "itpm", output: "otpm", cost: "usd_micros" },
 *     // $3/M input, $15/M output, $0.30/M cache reads, in micro-dollars per million tokens
 *     prices: { input: 3_000_000, output: 15_000_000, cachedInput: 300_000 },
 *   },
 * );
 * assert.deepEqual(charges, { itpm: 100, otpm: 400, usd_micros: 7800 });
 * ```
 */
export function usageCharges(
  usage: TokenUsage,
  options: UsageChargeOptions,
): Record<string, number> {
  const { limits } = options;
  const input = usage.inputTokens + usage.cacheWriteTokens +
    (options.countCachedInput ? usage.cachedInputTokens : 0);
  const out: Record<string, number> = {};
  const add = (name: string | undefined, v: number): void => {
    if (name !== undefined) out[name] = (out[name] ?? 0) + v;
  };
  add(limits.input, input);
  add(limits.output, usage.outputTokens);
  add(limits.total, input + usage.outputTokens);
  if (limits.cost !== undefined) {
    const p = options.prices;
    if (!p) {
      throw new ValidationError(
        "prices",
        p,
        `limits.cost ("${limits.cost}") needs prices per million tokens`,
      );
    }
    const pin = price(p.input, 0, "prices.input");
    const micro = BigInt(usage.inputTokens) * pin +
      BigInt(usage.outputTokens) * price(p.output, 0, "prices.output") +
      BigInt(usage.cachedInputTokens) *
        price(p.cachedInput, p.input, "prices.cachedInput") +
      BigInt(usage.cacheWriteTokens) *
        price(p.cacheWrite, p.input, "prices.cacheWrite");
    add(limits.cost, Number((micro + 999_999n) / 1_000_000n));
  }
  return out;
}

/**
 * The adjustments that take a lease holding `reserved` to `actual`, per
 * name of `actual` (`actual − reserved`; a name not reserved counts 0).
 * Pure.
 */
export function usageDeltas(
  actual: Readonly<Record<string, number>>,
  reserved: Readonly<Record<string, number>>,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [n, a] of Object.entries(actual)) out[n] = a - (reserved[n] ?? 0);
  return out;
}

/**
 * Whole tokens a lease stands for now on its entity, per limit name (its
 * cascade parent is charged the same): what it was granted, plus its
 * adjustments so far. An unchecked lease reports what it was granted.
 */
export function leaseHolds(lease: Lease): Record<string, number> {
  const out: Record<string, number> = {};
  const entries = lease.entries.filter((e) =>
    e.ref.entityId === lease.entityId
  );
  if (entries.length === 0) return { ...lease.granted };
  for (const e of entries) {
    out[e.limit.name] = (out[e.limit.name] ?? 0) + Number(e.consumed / 1000n);
  }
  return out;
}

/**
 * Adjusts `lease` so that each limit `options` maps holds what `usage`
 * amounts to (the estimate reserved at acquire, plus any adjustments, is
 * reconciled); returns the deltas applied. Written at commit.
 *
 * @throws {ValidationError} a mapped limit is not held by the lease, or a price is invalid
 * @throws {LeaseExpiredError} the lease is closed
 *
 * @example Reconcile an OpenAI response
 * ```ts
 * import assert from "node:assert/strict";
 * import { Limit, parseOpenAIUsage, reconcileUsage } from "@zae/limiter";
 * import { createTestLimiter } from "@zae/limiter/testing";
 *
 * const { limiter, source } = createTestLimiter();
 * source.setSystemDefaults([Limit.perMinute("tpm", 100_000)]);
 * const lease = await limiter.acquire({ entityId: "k", resource: "gpt", consume: { tpm: 2000 } });
 * const response = { usage: { prompt_tokens: 900, completion_tokens: 150, total_tokens: 1050 } };
 * const deltas = reconcileUsage(lease, parseOpenAIUsage(response.usage), { limits: { total: "tpm" } });
 * assert.deepEqual(deltas, { tpm: -950 });
 * await lease.commit();
 * ```
 */
export function reconcileUsage(
  lease: Lease,
  usage: TokenUsage,
  options: UsageChargeOptions,
): Record<string, number> {
  const deltas = usageDeltas(usageCharges(usage, options), leaseHolds(lease));
  lease.adjust(deltas);
  return deltas;
}
