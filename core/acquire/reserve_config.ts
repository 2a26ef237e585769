/**
 * The options of the local reserve (`RateLimiterOptions.localReserve`),
 * what it reports, and how they are resolved once at construction: the
 * defaults, the validation, and the short-lived runtime check that turns
 * it off on AWS Lambda (a frozen container cannot give its slices back).
 *
 * @module
 */
import { ValidationError } from "../errors.ts";

/**
 * Options of the local reserve (see {@linkcode RateLimiterOptions.localReserve}).
 * Every field is optional.
 */
export interface LocalReserveOptions {
  /**
   * Limit names served from slices. A call that consumes any other name
   * (on the entity or its cascade parent) goes to DynamoDB as without the
   * reserve. @default every limit
   */
  readonly limits?: readonly string[];
  /**
   * Largest slice of one limit, as a fraction of its capacity (per shard),
   * in (0, 1]. The process never holds more than this of a bucket, so
   * other processes always see the rest. @default 0.1
   */
  readonly maxFraction?: number;
  /**
   * A slice is sized to what this process asked of the bucket over the last
   * `targetMs` milliseconds (its recent rate), capped by `maxFraction` and
   * by half of what the bucket was last seen to store. @default 1000
   */
  readonly targetMs?: number;
  /**
   * Milliseconds a slice stays usable after it was last topped up; then its
   * unused tokens are given back to DynamoDB. Also bounds how long a slice
   * outlives a limit change seen by the process. @default 2000
   */
  readonly ttlMs?: number;
  /**
   * Keep the reserve on where a short-lived runtime is detected (AWS Lambda:
   * `AWS_LAMBDA_FUNCTION_NAME`). A frozen or killed container strands the
   * slices it holds until refill. @default false (the reserve is off there,
   * and `onError` gets a note with context "localReserve")
   */
  readonly allowShortLived?: boolean;
  /**
   * The environment the runtime check reads. @default the process
   * environment when it can be read (`process.env` on Node and Deno; on
   * Deno without `--allow-env` nothing is detected), else `{}`
   */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Called when a slice is taken, given back, or could not be given back. */
  readonly onSlice?: (event: SliceEvent) => void;
}

/** A slice taken, given back, or stranded (see {@linkcode LocalReserveOptions.onSlice}). */
export interface SliceEvent {
  /**
   * `taken`: a write took `tokens` into the slice (an acquire's own amount
   * included); `returned`: `tokens` were given back to DynamoDB; `stranded`:
   * `tokens` could not be given back (they stay taken until refill).
   */
  readonly kind: "taken" | "returned" | "stranded";
  /** The slice (unique within the limiter; a top-up keeps the id). */
  readonly id: number;
  /** Entity of the bucket. */
  readonly entityId: string;
  /** Resource of the bucket. */
  readonly resource: string;
  /** Shard of the bucket. */
  readonly shard: number;
  /** Tokens per limit name (fractions are millitokens). */
  readonly tokens: Readonly<Record<string, number>>;
}

/** What the local reserve did so far (see `RateLimiter.reserveStats`). */
export interface LocalReserveStats {
  /** Acquires admitted from memory, without a DynamoDB call. */
  readonly localAdmissions: number;
  /** Writes that took (or topped up) a slice; each also admitted one acquire. */
  readonly slicesTaken: number;
  /** Tokens held in live slices now, per limit name (summed over buckets). */
  readonly heldTokens: Readonly<Record<string, number>>;
  /** Tokens given back to DynamoDB, per limit name. */
  readonly returnedTokens: Readonly<Record<string, number>>;
  /** Tokens that could not be given back (a failed write), per limit name. */
  readonly strandedTokens: Readonly<Record<string, number>>;
}

/** The local reserve's options with defaults applied. */
export interface ResolvedReserveConfig {
  /** Limit names served, or `null` for all. */
  readonly limits: ReadonlySet<string> | null;
  /** `maxFraction` in parts per million. */
  readonly fractionPpm: bigint;
  /** Rate window and slice target, ms. */
  readonly targetMs: number;
  /** Slice lifetime, ms. */
  readonly ttlMs: number;
  /** Event callback. */
  readonly onSlice: (event: SliceEvent) => void;
}

/** The short-lived runtime named by an environment, or `null`. */
export function shortLivedRuntime(
  env: Readonly<Record<string, string | undefined>>,
): string | null {
  if (env["AWS_LAMBDA_FUNCTION_NAME"]) {
    return "AWS Lambda (AWS_LAMBDA_FUNCTION_NAME is set)";
  }
  if (env["AWS_EXECUTION_ENV"]?.startsWith("AWS_Lambda")) {
    return "AWS Lambda (AWS_EXECUTION_ENV)";
  }
  return null;
}

/**
 * The process environment, read only for the runtime check. A library has
 * no entry point of its own on Lambda to pass it in (style rule 6), so this
 * is the one place `core/` looks at it; any failure (no `process`, Deno
 * without `--allow-env`) reads as an empty environment.
 */
function processEnv(): Readonly<Record<string, string | undefined>> {
  const out: Record<string, string | undefined> = {};
  for (const name of ["AWS_LAMBDA_FUNCTION_NAME", "AWS_EXECUTION_ENV"]) {
    try {
      const env = (globalThis as {
        process?: { env?: Record<string, string | undefined> };
      }).process?.env;
      out[name] = env?.[name];
    } catch {
      // not readable: nothing detected
    }
  }
  return out;
}

function positive(field: string, v: unknown, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    throw new ValidationError(
      `localReserve.${field}`,
      v,
      "must be a positive number of milliseconds",
    );
  }
  return v;
}

/**
 * Resolves `RateLimiterOptions.localReserve`: `null` when off (not asked
 * for, or a short-lived runtime without `allowShortLived`, which `note`
 * is told).
 *
 * @throws {ValidationError} a field is out of range
 */
export function resolveReserveConfig(
  option: boolean | LocalReserveOptions | undefined,
  note: (message: string) => void,
): ResolvedReserveConfig | null {
  if (option === undefined || option === false) return null;
  const o: LocalReserveOptions = option === true ? {} : option;
  if (typeof o !== "object" || o === null) {
    throw new ValidationError(
      "localReserve",
      option,
      "must be true, false or an options object",
    );
  }
  const fraction = o.maxFraction ?? 0.1;
  if (
    typeof fraction !== "number" || !(fraction > 0) || !(fraction <= 1)
  ) {
    throw new ValidationError(
      "localReserve.maxFraction",
      fraction,
      "must be a number in (0, 1], such as 0.1",
    );
  }
  const targetMs = positive("targetMs", o.targetMs, 1000);
  const ttlMs = positive("ttlMs", o.ttlMs, 2000);
  if (o.limits !== undefined && !Array.isArray(o.limits)) {
    throw new ValidationError(
      "localReserve.limits",
      o.limits,
      "must be an array of limit names",
    );
  }
  const runtime = shortLivedRuntime(o.env ?? processEnv());
  if (runtime !== null && o.allowShortLived !== true) {
    note(
      `Cannot use the local reserve on ${runtime}: a frozen container ` +
        "strands its slices; the reserve is off (set " +
        "localReserve.allowShortLived to keep it on)",
    );
    return null;
  }
  return {
    limits: o.limits ? new Set(o.limits) : null,
    fractionPpm: BigInt(Math.max(1, Math.round(fraction * 1_000_000))),
    targetMs,
    ttlMs,
    onSlice: o.onSlice ?? (() => {}),
  };
}
