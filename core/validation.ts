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
    throw new ValidationError(field, value, "must be a whole number of tokens");
  }
  if (!allowNegative && value < 0) {
    throw new ValidationError(field, value, "cannot be negative");
  }
  return value;
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
