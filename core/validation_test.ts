import assert from "node:assert/strict";
import {
  InvalidIdentifierError,
  InvalidNameError,
  ValidationError,
  ZAELimiterError,
} from "./errors.ts";
import {
  MAX_IDENTIFIER_LENGTH,
  MAX_NAME_LENGTH,
  MAX_NAMESPACE_LENGTH,
  MAX_STACK_NAME_LENGTH,
  validateAmount,
  validateIdentifier,
  validateLimitName,
  validateNamespaceName,
  validatePrincipal,
  validateResource,
  validateStackName,
  WCU_LIMIT_NAME,
} from "./validation.ts";

const INVALID_IDENTIFIER = {
  name: "InvalidIdentifierError",
  code: "INVALID_IDENTIFIER",
} as const;
const INVALID_NAME = {
  name: "InvalidNameError",
  code: "INVALID_NAME",
} as const;
const VALIDATION_FAILED = {
  name: "ValidationError",
  code: "VALIDATION_FAILED",
} as const;

Deno.test("MAX_IDENTIFIER_LENGTH, MAX_NAME_LENGTH, MAX_STACK_NAME_LENGTH and WCU_LIMIT_NAME match the spec", () => {
  assert.equal(MAX_IDENTIFIER_LENGTH, 256);
  assert.equal(MAX_NAME_LENGTH, 64);
  assert.equal(MAX_STACK_NAME_LENGTH, 55);
  assert.equal(WCU_LIMIT_NAME, "wcu");
});

// ---------------------------------------------------------------------------
// Identifiers

Deno.test("validateIdentifier() accepts UUIDs, API-key-like and email-like ids", () => {
  const valid = [
    "550e8400-e29b-41d4-a716-446655440000",
    "sk-proj-abc123_XYZ.v2",
    "user@example.com",
    "user-123",
    "a",
    "9",
    "org:team:user",
    "a".repeat(256),
  ];
  for (const id of valid) assert.equal(validateIdentifier(id), id);
});

Deno.test("validateIdentifier() rejects an empty id", () => {
  assert.throws(() => validateIdentifier(""), {
    ...INVALID_IDENTIFIER,
    field: "entity_id",
    reason: "cannot be empty",
  });
});

Deno.test("validateIdentifier() rejects an id longer than 256 characters", () => {
  assert.throws(() => validateIdentifier("a".repeat(257)), {
    ...INVALID_IDENTIFIER,
    field: "entity_id",
    reason: "exceeds maximum length of 256",
  });
});

Deno.test("validateIdentifier() rejects # as the reserved delimiter", () => {
  for (const id of ["user#1", "#user", "user#"]) {
    assert.throws(() => validateIdentifier(id), {
      ...INVALID_IDENTIFIER,
      field: "entity_id",
      reason: "cannot contain '#' (reserved delimiter)",
    }, id);
  }
});

Deno.test("validateIdentifier() rejects a leading - or _ and characters outside the pattern", () => {
  for (
    const id of [
      "-user",
      "_user",
      ".user",
      ":user",
      "@user",
      "user name",
      "user/1",
      "user!",
      "üser",
      "user$",
    ]
  ) {
    assert.throws(() => validateIdentifier(id), {
      ...INVALID_IDENTIFIER,
      field: "entity_id",
    }, id);
  }
});

Deno.test("validateIdentifier() checks length before the # and pattern rules", () => {
  assert.throws(() => validateIdentifier("#" + "a".repeat(300)), {
    ...INVALID_IDENTIFIER,
    reason: "exceeds maximum length of 256",
  });
  assert.throws(() => validateIdentifier("-#"), {
    ...INVALID_IDENTIFIER,
    reason: "cannot contain '#' (reserved delimiter)",
  });
});

Deno.test("validateIdentifier() names the given field", () => {
  assert.throws(() => validateIdentifier("", "parent_id"), {
    ...INVALID_IDENTIFIER,
    field: "parent_id",
  });
});

Deno.test("validateIdentifier() rejects non-strings with InvalidIdentifierError", () => {
  for (const value of [undefined, null, 42, {}, ["a"]]) {
    assert.throws(() => validateIdentifier(value), {
      ...INVALID_IDENTIFIER,
      field: "entity_id",
    }, String(value));
  }
});

Deno.test("validateIdentifier() throws an error that is also a ValidationError and ZAELimiterError", () => {
  try {
    validateIdentifier("");
    assert.fail("expected a throw");
  } catch (e) {
    assert.ok(e instanceof InvalidIdentifierError);
    assert.ok(e instanceof ValidationError);
    assert.ok(e instanceof ZAELimiterError);
  }
});

// ---------------------------------------------------------------------------
// Limit names

Deno.test("validateLimitName() accepts the spec's valid names", () => {
  for (
    const name of [
      "rpm",
      "tokens_per_minute",
      "rate-limit",
      "gpt-3.5",
      "TPM",
      "a",
      "a".repeat(64),
      "wcu2",
    ]
  ) {
    assert.equal(validateLimitName(name), name);
  }
});

Deno.test("validateLimitName() rejects the spec's invalid names", () => {
  const invalid: [string, RegExp][] = [
    ["rpm#evil", /reserved delimiter/],
    ["", /cannot be empty/],
    ["a".repeat(100), /exceeds maximum length of 64/],
    ["123rpm", /must start with/],
    ["rpm@test", /must start with/],
    ["rpm:test", /must start with/],
    ["rpm/test", /must start with/],
    ["rpm test", /must start with/],
    ["wcu", /'wcu' is a reserved limit name/],
  ];
  for (const [name, reason] of invalid) {
    assert.throws(() => validateLimitName(name), {
      ...INVALID_NAME,
      field: "name",
      reason,
    }, name);
  }
});

Deno.test("validateLimitName() rejects a 65-character name", () => {
  assert.throws(() => validateLimitName("a".repeat(65)), {
    ...INVALID_NAME,
    field: "name",
    reason: "exceeds maximum length of 64",
  });
});

Deno.test("validateLimitName() rejects a leading underscore, dot or hyphen", () => {
  for (const name of ["_rpm", ".rpm", "-rpm"]) {
    assert.throws(() => validateLimitName(name), {
      ...INVALID_NAME,
      field: "name",
    }, name);
  }
});

Deno.test("validateLimitName() rejects non-strings with InvalidNameError", () => {
  assert.throws(() => validateLimitName(7), { ...INVALID_NAME, field: "name" });
});

// ---------------------------------------------------------------------------
// Resources

Deno.test("validateResource() accepts the spec's valid resources", () => {
  const valid = [
    "gpt-4",
    "openai/gpt-4",
    "anthropic/claude-3/opus",
    "a/b/c/d",
    "openai/",
    "gpt-3.5-turbo",
    "claude_3",
    "a".repeat(64),
  ];
  for (const r of valid) assert.equal(validateResource(r), r);
});

Deno.test("validateResource() rejects the spec's invalid resources", () => {
  const invalid: [string, RegExp][] = [
    ["/gpt-4", /must start with/],
    ["openai#gpt-4", /reserved delimiter/],
    ["", /cannot be empty/],
    ["a".repeat(100), /exceeds maximum length of 64/],
    ["123api", /must start with/],
  ];
  for (const [r, reason] of invalid) {
    assert.throws(() => validateResource(r), {
      ...INVALID_NAME,
      field: "resource",
      reason,
    }, r);
  }
});

Deno.test("validateResource() rejects the reserved _default_ resource and stray characters", () => {
  for (const r of ["_default_", "open ai", "openai:gpt", "openai@x", "-x"]) {
    assert.throws(() => validateResource(r), {
      ...INVALID_NAME,
      field: "resource",
    }, r);
  }
});

Deno.test("validateResource() rejects a 65-character resource", () => {
  assert.throws(() => validateResource("a".repeat(65)), {
    ...INVALID_NAME,
    field: "resource",
  });
});

// ---------------------------------------------------------------------------
// Stack names

Deno.test("validateStackName() accepts letters, digits and hyphens starting with a letter", () => {
  for (
    const s of [
      "zae-limiter",
      "a",
      "MyStack2",
      "prod-us-east-1",
      "a".repeat(55),
    ]
  ) {
    assert.equal(validateStackName(s), s);
  }
});

Deno.test("validateStackName() rejects underscores and suggests hyphens", () => {
  assert.throws(() => validateStackName("my_stack"), {
    ...VALIDATION_FAILED,
    field: "name",
    reason: /hyphens/,
  });
});

Deno.test("validateStackName() rejects periods, spaces and a non-letter start", () => {
  for (const s of ["my.stack", "my stack", "1stack", "-stack", "stack!", ""]) {
    assert.throws(() => validateStackName(s), {
      ...VALIDATION_FAILED,
      field: "name",
    }, s);
  }
});

Deno.test("validateStackName() rejects a name longer than 55 characters", () => {
  assert.throws(() => validateStackName("a".repeat(56)), {
    ...VALIDATION_FAILED,
    field: "name",
    reason: "exceeds maximum length of 55",
  });
});

Deno.test("validateStackName() throws a plain ValidationError, not a subclass", () => {
  try {
    validateStackName("my_stack");
    assert.fail("expected a throw");
  } catch (e) {
    assert.ok(e instanceof ValidationError);
    assert.ok(!(e instanceof InvalidNameError));
    assert.ok(!(e instanceof InvalidIdentifierError));
  }
});

// ---------------------------------------------------------------------------
// Namespace names

Deno.test("validateNamespaceName() accepts ordinary namespace names", () => {
  for (
    const n of [
      "default",
      "tenant-alpha",
      "team_1",
      "v1.2",
      "9lives",
      "a".repeat(MAX_NAMESPACE_LENGTH),
    ]
  ) {
    assert.equal(validateNamespaceName(n), n);
  }
});

Deno.test("validateNamespaceName() rejects the reserved _ namespace", () => {
  assert.throws(() => validateNamespaceName("_"), {
    ...VALIDATION_FAILED,
    field: "namespace",
    reason: "reserved for system use",
  });
});

Deno.test("validateNamespaceName() rejects names that would break keys or CLI arguments", () => {
  // Stricter than the reference (which only rejects "_"): see the module doc.
  for (
    const n of [
      "",
      "-x",
      "a#b",
      "a/b",
      "a b",
      "a".repeat(MAX_NAMESPACE_LENGTH + 1),
    ]
  ) {
    assert.throws(() => validateNamespaceName(n), {
      ...VALIDATION_FAILED,
      field: "namespace",
    }, n);
  }
});

// ---------------------------------------------------------------------------
// Amounts and principals

Deno.test("validateAmount() accepts whole non-negative numbers", () => {
  assert.equal(validateAmount(0, "consume"), 0);
  assert.equal(validateAmount(5, "consume"), 5);
  assert.equal(
    validateAmount(Number.MAX_SAFE_INTEGER, "consume"),
    Number.MAX_SAFE_INTEGER,
  );
});

Deno.test("validateAmount() rejects negative amounts unless allowed", () => {
  assert.throws(() => validateAmount(-1, "consume"), {
    ...VALIDATION_FAILED,
    field: "consume",
    reason: /negative/,
  });
  assert.equal(validateAmount(-1, "adjust", true), -1);
});

Deno.test("validateAmount() rejects fractions, non-finite and unsafe numbers and non-numbers", () => {
  for (
    const v of [
      1.5,
      NaN,
      Infinity,
      -Infinity,
      2 ** 53,
      "5",
      null,
      undefined,
      5n,
    ]
  ) {
    assert.throws(() => validateAmount(v, "consume", true), {
      ...VALIDATION_FAILED,
      field: "consume",
    }, String(v));
  }
});

Deno.test("validatePrincipal() accepts an ARN as is", () => {
  const arn = "arn:aws:iam::123456789012:role/Admin#x";
  assert.equal(validatePrincipal(arn), arn);
});

Deno.test("validatePrincipal() validates a non-ARN principal as an identifier", () => {
  assert.equal(validatePrincipal("alice@example.com"), "alice@example.com");
  assert.throws(() => validatePrincipal("bad#principal"), {
    ...INVALID_IDENTIFIER,
    field: "principal",
  });
  assert.throws(() => validatePrincipal(""), {
    ...INVALID_IDENTIFIER,
    field: "principal",
  });
});

Deno.test("validatePrincipal() does not accept an over-long ARN as is", () => {
  assert.throws(() => validatePrincipal("arn:" + "a".repeat(2045)), {
    ...INVALID_IDENTIFIER,
    field: "principal",
  });
});

// ---------------------------------------------------------------------------
// ValidationError.value

Deno.test("validateIdentifier() truncates the offending value to 50 characters plus ...", () => {
  const long = "#" + "b".repeat(99);
  assert.throws(() => validateIdentifier(long), {
    ...INVALID_IDENTIFIER,
    value: long.slice(0, 50) + "...",
  });
});

Deno.test("validateIdentifier() keeps a value of exactly 50 characters untruncated", () => {
  const v = "#".padEnd(50, "x");
  assert.throws(() => validateIdentifier(v), {
    ...INVALID_IDENTIFIER,
    value: v,
  });
});
