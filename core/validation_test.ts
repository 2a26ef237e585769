import assert from "node:assert/strict";
import {
  InvalidIdentifierError,
  InvalidNameError,
  ValidationError,
  ZAELimiterError,
} from "./errors.ts";
import {
  MAX_DISPLAY_NAME_LENGTH,
  MAX_IDENTIFIER_LENGTH,
  MAX_METADATA_ENTRIES,
  MAX_METADATA_KEY_LENGTH,
  MAX_METADATA_VALUE_LENGTH,
  MAX_NAME_LENGTH,
  MAX_NAMESPACE_LENGTH,
  MAX_STACK_NAME_LENGTH,
  validateAmount,
  validateAmounts,
  validateConfiguredNames,
  validateDisplayName,
  validateIdentifier,
  validateLimitName,
  validateMetadata,
  validateNamespaceName,
  validateOptions,
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

Deno.test("validateIdentifier() keeps the raw value and cuts the shown one to 200 characters plus ...", () => {
  const long = "#" + "b".repeat(299);
  assert.throws(() => validateIdentifier(long), {
    ...INVALID_IDENTIFIER,
    value: long,
    shownValue: long.slice(0, 200) + "...",
    message: new RegExp(
      `^Invalid entity_id "#b{199}\\.\\.\\." \\(300 characters\\): `,
    ),
  });
});

Deno.test("validateIdentifier() shows a value of exactly 200 characters uncut", () => {
  const v = "#".padEnd(200, "x");
  assert.throws(() => validateIdentifier(v), {
    ...INVALID_IDENTIFIER,
    value: v,
    shownValue: v,
  });
});

/** Every raw control character a message must never carry. */
// deno-lint-ignore no-control-regex
const RAW_CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

function thrown(fn: () => unknown): ValidationError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ValidationError, String(e));
    return e;
  }
  assert.fail("expected a ValidationError");
}

Deno.test("validators escape control characters of the input in their messages", () => {
  const id = thrown(() => validateIdentifier("user-1\nERROR forged line"));
  assert.equal(id.code, "INVALID_IDENTIFIER");
  assert.equal(id.value, "user-1\nERROR forged line");
  assert.ok(id.message.includes('"user-1\\nERROR forged line"'), id.message);
  assert.ok(!RAW_CONTROL.test(id.message), id.message);

  const name = thrown(() => validateLimitName("\u001b[31mrpm"));
  assert.equal(name.code, "INVALID_NAME");
  assert.ok(name.message.includes('"\\u001b[31mrpm"'), name.message);
  assert.ok(!RAW_CONTROL.test(name.message), name.message);

  const res = thrown(() => validateResource("gpt\r\n4"));
  assert.ok(res.message.includes('"gpt\\r\\n4"'), res.message);
  const ns = thrown(() => validateNamespaceName("ns\u0007"));
  assert.ok(ns.message.includes('"ns\\u0007"'), ns.message);
  const amount = thrown(() => validateAmount(-1, "consume.\u001b[2J"));
  assert.equal(amount.field, "consume.\u001b[2J");
  assert.ok(!RAW_CONTROL.test(amount.message), amount.message);
});

// ---------------------------------------------------------------------------
// Non-finite amounts, options objects and amount maps

Deno.test("validateAmount() names NaN, Infinity and -Infinity as such (not null)", () => {
  for (
    const [v, shown] of [[NaN, "NaN"], [Infinity, "Infinity"], [
      -Infinity,
      "-Infinity",
    ]] as const
  ) {
    const e = thrown(() => validateAmount(v, "consume.rpm"));
    assert.equal(e.code, "VALIDATION_FAILED");
    assert.equal(e.field, "consume.rpm");
    assert.equal(e.shownValue, shown);
    assert.ok(
      e.message.startsWith(`Invalid consume.rpm "${shown}": `),
      e.message,
    );
    assert.ok(!e.message.includes("null"), e.message);
  }
});

Deno.test("validateAmount() says what to give", () => {
  assert.match(
    thrown(() => validateAmount(-1, "needed.rpm")).message,
    /cannot be negative; give 0 or more tokens/,
  );
  assert.match(
    thrown(() => validateAmount(1.5, "needed.rpm")).message,
    /0 or more, such as 1 or 500/,
  );
  assert.match(
    thrown(() => validateAmount(1.5, "adjust.rpm", true)).message,
    /such as -100, 0 or 500/,
  );
});

Deno.test("validateOptions() refuses null, undefined, primitives and arrays", () => {
  for (const v of [null, undefined, "x", 1, [], true]) {
    const e = thrown(() => validateOptions(v as unknown as object));
    assert.equal(e.code, "VALIDATION_FAILED");
    assert.equal(e.field, "options");
    assert.equal(e.value, v);
  }
  assert.match(
    thrown(() =>
      validateOptions(null as unknown as object, "options", "{ entityId }")
    ).message,
    /^Invalid options "null": must be an object, e\.g\. \{ entityId \}$/,
  );
  const o = { entityId: "a" };
  assert.equal(validateOptions(o), o);
});

Deno.test("validateAmounts() returns the amounts and refuses bad maps, names and amounts", () => {
  assert.deepEqual(
    validateAmounts({ rpm: 1, tpm: 0 }, "needed"),
    new Map([["rpm", 1], ["tpm", 0]]),
  );
  for (const v of [undefined, null, "rpm", 5, [1]]) {
    const e = thrown(() => validateAmounts(v, "needed"));
    assert.equal(e.code, "VALIDATION_FAILED");
    assert.equal(e.field, "needed");
    assert.match(e.message, /e\.g\. \{ rpm: 1, tpm: 500 \}/);
  }
  for (
    const [v, shown] of [
      [-1, "-1"],
      [1.5, "1.5"],
      [NaN, "NaN"],
      [
        Infinity,
        "Infinity",
      ],
      [-Infinity, "-Infinity"],
      ["1", "1"],
    ] as const
  ) {
    const e = thrown(() => validateAmounts({ rpm: v }, "needed"));
    assert.equal(e.code, "VALIDATION_FAILED");
    assert.equal(e.field, "needed.rpm");
    assert.equal(e.shownValue, shown);
  }
  const bad = thrown(() => validateAmounts({ "r\npm": 1 }, "needed"));
  assert.equal(bad.code, "INVALID_NAME");
  assert.equal(bad.field, "needed");
  assert.ok(bad.message.includes('"r\\npm"'), bad.message);
});

Deno.test("validateConfiguredNames() refuses unknown names and lists the configured ones", () => {
  validateConfiguredNames(["rpm"], ["tpm", "rpm"], "needed", "x");
  const e = thrown(() =>
    validateConfiguredNames(
      ["rpm", "rph"],
      ["tpm", "rpm"],
      "needed",
      'entity "e"',
    )
  );
  assert.equal(e.code, "VALIDATION_FAILED");
  assert.equal(e.field, "needed");
  assert.equal(e.value, "rph");
  assert.match(
    e.message,
    /^Invalid needed "rph": no limit "rph" is configured for entity "e" \(configured: rpm, tpm\); ask only for configured limits$/,
  );
  assert.match(
    thrown(() => validateConfiguredNames(["a"], [], "needed", "x")).message,
    /configured: none/,
  );
});

// ---------------------------------------------------------------------------
// Entity display name and metadata sizes

Deno.test("validateDisplayName() accepts up to MAX_DISPLAY_NAME_LENGTH characters", () => {
  assert.equal(MAX_DISPLAY_NAME_LENGTH, 256);
  const ok = "n".repeat(MAX_DISPLAY_NAME_LENGTH);
  assert.equal(validateDisplayName(ok), ok);
  assert.equal(validateDisplayName(""), "");
  const e = thrown(() => validateDisplayName(ok + "n"));
  assert.equal(e.code, "VALIDATION_FAILED");
  assert.equal(e.field, "name");
  assert.equal(e.value, ok + "n");
  assert.match(
    e.message,
    /\(257 characters\): display name is 257 characters long; the maximum is 256$/,
  );
  assert.equal(thrown(() => validateDisplayName(42)).field, "name");
});

Deno.test("validateMetadata() enforces the entry count, key and value sizes and types", () => {
  assert.equal(MAX_METADATA_ENTRIES, 50);
  assert.equal(MAX_METADATA_KEY_LENGTH, 128);
  assert.equal(MAX_METADATA_VALUE_LENGTH, 512);
  const full = Object.fromEntries(
    Array.from({ length: 50 }, (_, i) => [
      `k${i}`.padEnd(128, "k"),
      "v".repeat(512),
    ]),
  );
  assert.deepEqual(validateMetadata(full), full);

  const many = thrown(() => validateMetadata({ ...full, extra: "x" }));
  assert.equal(many.field, "metadata");
  assert.match(many.message, /has 51 entries; the maximum is 50$/);

  const key = thrown(() => validateMetadata({ ["k".repeat(129)]: "v" }));
  assert.equal(key.field, "metadata");
  assert.match(key.message, /key is 129 characters long; the maximum is 128$/);

  const value = thrown(() => validateMetadata({ tier: "v".repeat(513) }));
  assert.equal(value.field, "metadata.tier");
  assert.match(
    value.message,
    /value is 513 characters long; the maximum is 512$/,
  );

  assert.match(
    thrown(() => validateMetadata({ "": "v" })).message,
    /keys cannot be empty/,
  );
  assert.equal(
    thrown(() => validateMetadata({ tier: 1 })).field,
    "metadata.tier",
  );
  for (const v of [null, [], "x"]) {
    assert.equal(thrown(() => validateMetadata(v)).field, "metadata");
  }
  const proto = validateMetadata(JSON.parse('{"__proto__":"x"}'));
  assert.equal(Object.getOwnPropertyDescriptor(proto, "__proto__")?.value, "x");
});
