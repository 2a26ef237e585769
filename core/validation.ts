/**
 * Input validation (spec 03 §4). Checks run in order (empty, length, `#`,
 * reserved, pattern) and the first failure names the field and the value.
 *
 * @module
 */
import {
  InvalidIdentifierError,
  InvalidNameError,
  ValidationError,
} from "./errors.ts";

const IDENTIFIER = /^[a-zA-Z0-9][a-zA-Z0-9_.\-:@]*$/;
const LIMIT_NAME = /^[a-zA-Z][a-zA-Z0-9_.\-]*$/;
const RESOURCE = /^[a-zA-Z][a-zA-Z0-9_.\-/]*$/;
const STACK = /^[A-Za-z][A-Za-z0-9-]*$/;
const NAMESPACE = /^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$/;

/** Maximum length of entity ids. */
export const MAX_IDENTIFIER_LENGTH = 256;
/** Maximum length of limit and resource names. */
export const MAX_NAME_LENGTH = 64;
/** Maximum length of a stack name. */
export const MAX_STACK_NAME_LENGTH = 55;
/** Maximum length of a namespace name. */
export const MAX_NAMESPACE_LENGTH = 64;
/** The hidden write-capacity limit name; reserved. */
export const WCU_LIMIT_NAME = "wcu";

function requireString(
  field: string,
  value: unknown,
  make: (f: string, v: unknown, r: string) => Error,
): string {
  if (typeof value !== "string") throw make(field, value, "must be a string");
  return value;
}

/**
 * Validates an entity id, parent id or non-ARN principal.
 *
 * @throws {InvalidIdentifierError} `INVALID_IDENTIFIER`
 */
export function validateIdentifier(
  value: unknown,
  field = "entity_id",
): string {
  const make = (f: string, v: unknown, r: string) =>
    new InvalidIdentifierError(f, v, r);
  const s = requireString(field, value, make);
  if (s.length === 0) throw make(field, s, "cannot be empty");
  if (s.length > MAX_IDENTIFIER_LENGTH) {
    throw make(field, s, `exceeds maximum length of ${MAX_IDENTIFIER_LENGTH}`);
  }
  if (s.includes("#")) {
    throw make(field, s, "cannot contain '#' (reserved delimiter)");
  }
  if (!IDENTIFIER.test(s)) {
    throw make(
      field,
      s,
      "must start with a letter or digit and contain only letters, digits and _ . - : @",
    );
  }
  return s;
}

/**
 * Validates a limit name.
 *
 * @throws {InvalidNameError} `INVALID_NAME`
 */
export function validateLimitName(value: unknown, field = "name"): string {
  const make = (f: string, v: unknown, r: string) =>
    new InvalidNameError(f, v, r);
  const s = requireString(field, value, make);
  if (s.length === 0) throw make(field, s, "cannot be empty");
  if (s.length > MAX_NAME_LENGTH) {
    throw make(field, s, `exceeds maximum length of ${MAX_NAME_LENGTH}`);
  }
  if (s.includes("#")) {
    throw make(field, s, "cannot contain '#' (reserved delimiter)");
  }
  if (s === WCU_LIMIT_NAME) {
    throw make(field, s, "'wcu' is a reserved limit name");
  }
  if (!LIMIT_NAME.test(s)) {
    throw make(
      field,
      s,
      "must start with a letter and contain only letters, digits and _ . -",
    );
  }
  return s;
}

/**
 * Validates a resource name (`openai/gpt-4` is valid; `/` is allowed after the first letter).
 *
 * @throws {InvalidNameError} `INVALID_NAME`
 */
export function validateResource(value: unknown, field = "resource"): string {
  const make = (f: string, v: unknown, r: string) =>
    new InvalidNameError(f, v, r);
  const s = requireString(field, value, make);
  if (s.length === 0) throw make(field, s, "cannot be empty");
  if (s.length > MAX_NAME_LENGTH) {
    throw make(field, s, `exceeds maximum length of ${MAX_NAME_LENGTH}`);
  }
  if (s.includes("#")) {
    throw make(field, s, "cannot contain '#' (reserved delimiter)");
  }
  if (!RESOURCE.test(s)) {
    throw make(
      field,
      s,
      "must start with a letter and contain only letters, digits and _ . - /",
    );
  }
  return s;
}

/**
 * Validates a stack (table) name.
 *
 * @throws {ValidationError} `VALIDATION_FAILED` with field `name`
 */
export function validateStackName(value: unknown, field = "name"): string {
  const make = (f: string, v: unknown, r: string) =>
    new ValidationError(f, v, r);
  const s = requireString(field, value, make);
  if (s.length === 0) throw make(field, s, "cannot be empty");
  if (s.includes("_")) {
    throw make(field, s, "cannot contain underscores (use hyphens)");
  }
  if (s.includes(".")) throw make(field, s, "cannot contain periods");
  if (s.includes(" ")) throw make(field, s, "cannot contain spaces");
  if (!STACK.test(s)) {
    throw make(
      field,
      s,
      "must start with a letter and contain only letters, digits and hyphens",
    );
  }
  if (s.length > MAX_STACK_NAME_LENGTH) {
    throw make(field, s, `exceeds maximum length of ${MAX_STACK_NAME_LENGTH}`);
  }
  return s;
}

/**
 * Validates a namespace name. Stricter than the reference (weakness 21): the
 * name becomes part of a sort key and of CLI arguments, so `#`, `/`, spaces
 * and a leading `-` are refused, and `_` is reserved.
 *
 * @throws {ValidationError} `VALIDATION_FAILED` with field `namespace`
 */
export function validateNamespaceName(
  value: unknown,
  field = "namespace",
): string {
  const make = (f: string, v: unknown, r: string) =>
    new ValidationError(f, v, r);
  const s = requireString(field, value, make);
  if (s.length === 0) throw make(field, s, "cannot be empty");
  if (s === "_") throw make(field, s, "reserved for system use");
  if (s.length > MAX_NAMESPACE_LENGTH) {
    throw make(field, s, `exceeds maximum length of ${MAX_NAMESPACE_LENGTH}`);
  }
  if (!NAMESPACE.test(s)) {
    throw make(
      field,
      s,
      "must start with a letter or digit and contain only letters, digits and _ . -",
    );
  }
  return s;
}

/**
 * Validates a whole-token amount: a safe integer, and not negative unless allowed.
 *
 * @throws {ValidationError} `VALIDATION_FAILED`
 */
export function validateAmount(
  value: unknown,
  field: string,
  allowNegative = false,
): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value)) {
    throw new ValidationError(
      field,
      value,
      allowNegative
        ? "must be a whole number of tokens; give a safe integer such as -100, 0 or 500"
        : "must be a whole number of tokens; give a safe integer of 0 or more, such as 1 or 500",
    );
  }
  if (!allowNegative && value < 0) {
    throw new ValidationError(
      field,
      value,
      "cannot be negative; give 0 or more tokens",
    );
  }
  return value;
}

/**
 * Validates that an options argument is an object (not `null`, an array or
 * a primitive), so a bad call fails with a `ValidationError` rather than a
 * `TypeError` on a missing property.
 *
 * @throws {ValidationError} `VALIDATION_FAILED` with field `options`
 */
export function validateOptions<T extends object>(
  value: T | null | undefined,
  field = "options",
  example = "",
): T {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new ValidationError(
      field,
      value,
      `must be an object${example ? `, e.g. ${example}` : ""}`,
    );
  }
  return value;
}

/**
 * Validates a map of whole-token amounts per limit name (`consume`,
 * `needed`): an object whose keys are limit names and whose values are
 * whole numbers of tokens, 0 or more.
 *
 * @throws {ValidationError} `VALIDATION_FAILED` with `field` (not an object) or `field.name` (bad amount)
 * @throws {InvalidNameError} `INVALID_NAME` with `field` (bad name)
 */
export function validateAmounts(
  value: unknown,
  field: string,
): Map<string, number> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new ValidationError(
      field,
      value,
      "must map limit names to whole token amounts, e.g. { rpm: 1, tpm: 500 }",
    );
  }
  const out = new Map<string, number>();
  for (const [name, amount] of Object.entries(value)) {
    validateLimitName(name, field);
    out.set(name, validateAmount(amount, `${field}.${name}`));
  }
  return out;
}

/**
 * Refuses names that no configured limit has, listing the configured ones.
 *
 * @throws {ValidationError} `VALIDATION_FAILED` with `field`
 */
export function validateConfiguredNames(
  names: Iterable<string>,
  configured: Iterable<string>,
  field: string,
  where: string,
): void {
  const known = new Set(configured);
  for (const name of names) {
    if (!known.has(name)) {
      throw new ValidationError(
        field,
        name,
        `no limit "${name}" is configured for ${where} (configured: ${
          [...known].sort().join(", ") || "none"
        }); ask only for configured limits`,
      );
    }
  }
}

/** Maximum length of an entity's display name (`name`), in UTF-16 code units. */
export const MAX_DISPLAY_NAME_LENGTH = 256;
/** Maximum number of metadata entries of an entity. */
export const MAX_METADATA_ENTRIES = 50;
/** Maximum length of a metadata key, in UTF-16 code units. */
export const MAX_METADATA_KEY_LENGTH = 128;
/** Maximum length of a metadata value, in UTF-16 code units. */
export const MAX_METADATA_VALUE_LENGTH = 512;

/**
 * Validates an entity's display name: a string of at most
 * {@linkcode MAX_DISPLAY_NAME_LENGTH} characters. With the metadata limits,
 * an entity item (and its audit event) stays below about 100 KB of UTF-8
 * even in the worst case, well under DynamoDB's 400 KB item limit, so an
 * oversized input fails here rather than as an SDK `ValidationException`.
 *
 * @throws {ValidationError} `VALIDATION_FAILED` with field `name`
 */
export function validateDisplayName(value: unknown, field = "name"): string {
  if (typeof value !== "string") {
    throw new ValidationError(field, value, "display name must be a string");
  }
  if (value.length > MAX_DISPLAY_NAME_LENGTH) {
    throw new ValidationError(
      field,
      value,
      `display name is ${value.length} characters long; the maximum is ${MAX_DISPLAY_NAME_LENGTH}`,
    );
  }
  return value;
}

/**
 * Validates entity metadata: an object of at most
 * {@linkcode MAX_METADATA_ENTRIES} string entries, keys of 1 to
 * {@linkcode MAX_METADATA_KEY_LENGTH} characters and values of at most
 * {@linkcode MAX_METADATA_VALUE_LENGTH}. Returns a plain copy.
 *
 * @throws {ValidationError} `VALIDATION_FAILED` with field `metadata` (the
 * object, its size or a key) or `metadata.{key}` (a value)
 */
export function validateMetadata(value: unknown): Record<string, string> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new ValidationError(
      "metadata",
      value,
      'must map keys to string values, e.g. { tier: "gold" }',
    );
  }
  const entries = Object.entries(value);
  if (entries.length > MAX_METADATA_ENTRIES) {
    throw new ValidationError(
      "metadata",
      value,
      `has ${entries.length} entries; the maximum is ${MAX_METADATA_ENTRIES}`,
    );
  }
  for (const [k, v] of entries) {
    if (k.length === 0) {
      throw new ValidationError("metadata", k, "keys cannot be empty");
    }
    if (k.length > MAX_METADATA_KEY_LENGTH) {
      throw new ValidationError(
        "metadata",
        k,
        `key is ${k.length} characters long; the maximum is ${MAX_METADATA_KEY_LENGTH}`,
      );
    }
    if (typeof v !== "string") {
      throw new ValidationError(
        `metadata.${k}`,
        v,
        "metadata values must be strings",
      );
    }
    if (v.length > MAX_METADATA_VALUE_LENGTH) {
      throw new ValidationError(
        `metadata.${k}`,
        v,
        `value is ${v.length} characters long; the maximum is ${MAX_METADATA_VALUE_LENGTH}`,
      );
    }
  }
  // fromEntries defines own properties, so even a "__proto__" key is kept as data.
  return Object.fromEntries(entries) as Record<string, string>;
}

/**
 * Validates a principal: an ARN is taken as is, anything else must be an identifier.
 *
 * @throws {InvalidIdentifierError} `INVALID_IDENTIFIER` with field `principal`
 */
export function validatePrincipal(value: unknown): string {
  if (
    typeof value === "string" && value.startsWith("arn:") &&
    value.length <= 2048
  ) return value;
  return validateIdentifier(value, "principal");
}
