/**
 * An acquire's options, checked and normalised before anything is sent:
 * identifiers, the amounts in millitokens, the shadow names, the partial
 * grant's floor, the wait, the hold deadline and the concurrency limits.
 * Pure: a bad field throws a {@linkcode ValidationError} naming it.
 *
 * @module
 */
import type { ConcurrencyLimit } from "../concurrency_limit.ts";
import { ValidationError } from "../errors.ts";
import { validateLimitList } from "../limit.ts";
import { validateOnUnavailable } from "../local_fallback.ts";
import {
  validateAmount,
  validateIdentifier,
  validateLimitName,
  validateOptions,
  validateResource,
} from "../validation.ts";
import { validateConcurrency } from "./concurrency.ts";
import { validateMaxHold } from "./lease_deadline.ts";
import type { AcquireOptions } from "./options.ts";
import { resolveMin } from "./partial.ts";
import { shadowNames } from "./shadow.ts";
import { resolveWait, type WaitOptions } from "./wait.ts";

/** An acquire's options, checked. */
export interface AcquireRequest {
  /** Entity. */
  readonly entityId: string;
  /** Resource. */
  readonly resource: string;
  /** Millitokens per limit name. */
  readonly consume: Map<string, bigint>;
  /** Names judged in shadow for this call. */
  readonly shadow: ReadonlySet<string>;
  /** A partial grant's floor per limit name, in millitokens. */
  readonly min: ReadonlyMap<string, bigint> | null;
  /** How long the call may wait for capacity. */
  readonly wait: WaitOptions | null;
  /** The lease's hold deadline in ms (the call's, else the limiter's). */
  readonly maxHold: number | undefined;
  /** Concurrency limits to take slots of. */
  readonly concurrency: readonly ConcurrencyLimit[];
}

/**
 * Checks an acquire's options.
 *
 * @throws {ValidationError} the first bad field, named
 */
export function parseAcquire(
  o: AcquireOptions,
  defaults: { readonly maxHoldMs: number | undefined; readonly local: boolean },
): AcquireRequest {
  validateOptions(o, "options", "{ entityId, resource, consume }");
  const maxHold = validateMaxHold(o.maxHoldMs) ?? defaults.maxHoldMs;
  const entityId = validateIdentifier(o.entityId);
  const resource = validateResource(o.resource);
  validateOnUnavailable(o.onUnavailable, defaults.local);
  const concurrency = validateConcurrency(o.concurrency);
  if (!o.consume || typeof o.consume !== "object") {
    throw new ValidationError(
      "consume",
      o.consume,
      "must map limit names to whole token amounts",
    );
  }
  const consume = new Map<string, bigint>();
  for (const [name, amount] of Object.entries(o.consume)) {
    validateLimitName(name, "consume");
    validateAmount(amount, `consume.${name}`);
    consume.set(name, BigInt(amount) * 1000n);
  }
  const shadow = shadowNames(o.shadow, consume);
  if (o.limits !== undefined) {
    validateLimitList(o.limits);
    if (o.limits.length === 0) {
      throw new ValidationError(
        "limits",
        "[]",
        "give at least one limit or omit it",
      );
    }
  }
  return {
    entityId,
    resource,
    consume,
    shadow,
    min: o.min === undefined ? null : resolveMin(o.min, consume),
    wait: o.wait === undefined ? null : resolveWait(o.wait),
    maxHold,
    concurrency,
  };
}
