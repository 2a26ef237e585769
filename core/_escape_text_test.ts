/**
 * How error messages echo input (core/_escape_text.ts): values cut to a
 * bounded length, control and bidirectional characters escaped, in every
 * error class that shows a value, a field or an identifier.
 */
import assert from "node:assert/strict";
import {
  EntityExistsError,
  EntityNotFoundError,
  escapeText,
  IncompatibleSchemaError,
  InfrastructureNotFoundError,
  MAX_REASON_LENGTH,
  MAX_SHOWN_LENGTH,
  MinimumClientVersionError,
  NamespaceNotFoundError,
  RateLimiterUnavailable,
  RateLimitExceeded,
  StackAlreadyExistsError,
  StackOperationError,
  ValidationError,
  VersionMismatchError,
  ZAELimiterError,
} from "./errors.ts";
import { Limit } from "./limit.ts";
import type { LimitStatus } from "./models.ts";

function status(
  limitName: string,
  exceeded: boolean,
  retryAfterSeconds: number,
  options: {
    entityId?: string;
    resource?: string;
    limit?: Limit;
    available?: number;
    requested?: number;
  } = {},
): LimitStatus {
  return {
    entityId: options.entityId ?? "user-1",
    resource: options.resource ?? "gpt-4",
    limitName,
    limit: options.limit ?? Limit.perMinute(limitName, 100),
    available: options.available ?? (exceeded ? 0 : 50),
    requested: options.requested ?? 1,
    exceeded,
    retryAfterSeconds,
  };
}

Deno.test("ValidationError keeps the raw value and shows it cut to MAX_SHOWN_LENGTH characters plus ... and the length", () => {
  assert.equal(MAX_SHOWN_LENGTH, 200);
  const raw = "x".repeat(450_000);
  const e = new ValidationError("name", raw, "too long");
  assert.equal(e.value, raw);
  assert.equal(e.shownValue, "x".repeat(200) + "...");
  assert.equal(
    e.message,
    `Invalid name "${"x".repeat(200)}..." (450000 characters): too long`,
  );
  const exact = new ValidationError("name", "y".repeat(200), "r");
  assert.equal(exact.shownValue, "y".repeat(200));
  assert.equal(exact.message, `Invalid name "${"y".repeat(200)}": r`);
  assert.equal(
    new ValidationError("name", "y".repeat(201), "r").shownValue,
    "y".repeat(200) + "...",
  );
});

Deno.test("ValidationError never splits an escape or a surrogate pair when it cuts", () => {
  const a = new ValidationError("f", "a".repeat(199) + "\n", "r");
  assert.equal(a.shownValue, "a".repeat(199) + "...");
  assert.match(a.message, /\(200 characters\)/);
  const b = new ValidationError("f", "a".repeat(199) + "\u{1F600}", "r");
  assert.equal(b.shownValue, "a".repeat(199) + "...");
});

Deno.test("ValidationError.value is the raw value and is not enumerable", () => {
  const consume = { rpm: -1 };
  const e = new ValidationError("consume", consume, "r");
  assert.equal(e.value, consume);
  assert.equal(Object.keys(e).includes("value"), false);
  assert.equal(Object.keys(e).includes("shownValue"), true);
  assert.equal(new ValidationError("f", 5n, "r").value, 5n);
});

Deno.test("ValidationError shows non-string values JSON-like", () => {
  assert.equal(
    new ValidationError("consume", { rpm: -1 }, "r").shownValue,
    '{"rpm":-1}',
  );
  assert.equal(new ValidationError("consume", 1.5, "r").shownValue, "1.5");
  assert.equal(new ValidationError("consume", null, "r").shownValue, "null");
  assert.equal(new ValidationError("consume", true, "r").shownValue, "true");
  assert.equal(
    new ValidationError("consume", undefined, "r").shownValue,
    "undefined",
  );
  assert.equal(
    new ValidationError("consume", [1, "a", null], "r").shownValue,
    '[1,"a",null]',
  );
  assert.equal(
    new ValidationError("at", new Date(0), "r").shownValue,
    '"1970-01-01T00:00:00.000Z"',
  );
  assert.equal(
    new ValidationError("consume", { rpm: undefined }, "r").shownValue,
    '{"rpm":undefined}',
  );
});

Deno.test("ValidationError shows NaN, Infinity and -Infinity as themselves, not JSON's null", () => {
  for (
    const [v, shown] of [[NaN, "NaN"], [Infinity, "Infinity"], [
      -Infinity,
      "-Infinity",
    ]] as const
  ) {
    const e = new ValidationError("consume.rpm", v, "must be whole");
    assert.equal(e.shownValue, shown);
    assert.equal(e.message, `Invalid consume.rpm "${shown}": must be whole`);
    assert.ok(Number.isNaN(v) ? Number.isNaN(e.value) : e.value === v);
  }
  assert.equal(
    new ValidationError("needed", { rpm: NaN, tpm: [Infinity, -Infinity] }, "r")
      .shownValue,
    '{"rpm":NaN,"tpm":[Infinity,-Infinity]}',
  );
});

Deno.test("ValidationError accepts values JSON cannot encode", () => {
  assert.equal(new ValidationError("consume", 5n, "r").shownValue, "5");
  const circular: Record<string, unknown> = { a: 1 };
  circular.self = circular;
  const e = new ValidationError("consume", circular, "r");
  assert.equal(e.field, "consume");
  assert.equal(e.shownValue, '{"a":1,"self":[Circular]}');
  assert.equal(
    new ValidationError("f", new Map([[1, 2]]), "r").shownValue,
    "Map(1)",
  );
  assert.equal(new ValidationError("f", () => 1, "r").shownValue, "[Function]");
  assert.equal(
    new ValidationError("f", Symbol("a\nb"), "r").shownValue,
    "Symbol(a\\nb)",
  );
  const hostile = {
    get boom(): never {
      throw new Error("getter");
    },
  };
  assert.equal(
    new ValidationError("f", hostile, "r").shownValue,
    "[object Object]",
  );
});

Deno.test("ValidationError cuts a long array and gives its item count", () => {
  const e = new ValidationError("limits", new Array(10_000).fill(1), "r");
  assert.ok(e.shownValue.endsWith("..."));
  assert.ok(e.shownValue.length <= MAX_SHOWN_LENGTH + 3);
  assert.match(e.message, /\.\.\." \(10000 items\): r$/);
});

/** Every raw control character a message must never carry. */
// deno-lint-ignore no-control-regex
const RAW_CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e]/;

Deno.test("ValidationError escapes control characters from input JSON-style (log injection)", () => {
  const cases: [string, string][] = [
    ["a\nb", "a\\nb"],
    ["a\r\nFAKE LOG LINE", "a\\r\\nFAKE LOG LINE"],
    ["\u001b[31mred\u001b[0m", "\\u001b[31mred\\u001b[0m"],
    ["tab\there", "tab\\there"],
    ["nul\u0000\b\f", "nul\\u0000\\b\\f"],
    ["del\u007f c1\u009b", "del\\u007f c1\\u009b"],
    ["ls\u2028ps\u2029", "ls\\u2028ps\\u2029"],
    ["bidi\u202etxt.exe\u2066", "bidi\\u202etxt.exe\\u2066"],
    ["lone\ud800", "lone\\ud800"],
    ['quote" and \\ slash', 'quote\\" and \\\\ slash'],
    ["emoji \u{1F600} ok", "emoji \u{1F600} ok"],
  ];
  for (const [raw, escaped] of cases) {
    const e = new ValidationError("entity_id", raw, "bad");
    assert.equal(e.value, raw);
    assert.equal(e.shownValue, escaped);
    assert.equal(e.message, `Invalid entity_id "${escaped}": bad`);
    assert.ok(!RAW_CONTROL.test(e.message), JSON.stringify(e.message));
  }
  assert.equal(
    new ValidationError("metadata", { "k\n": "v\u001b" }, "r").shownValue,
    '{"k\\n":"v\\u001b"}',
  );
});

Deno.test("ValidationError escapes and caps the field and the reason too", () => {
  const field = "metadata." + "k".repeat(500) + "\n";
  const e = new ValidationError(
    field,
    "v",
    "no \u001b[2J here\n" + "r".repeat(5000),
  );
  assert.equal(e.field, field);
  assert.ok(!RAW_CONTROL.test(e.message), e.message.slice(0, 300));
  assert.ok(
    e.message.startsWith(`Invalid metadata.${"k".repeat(191)}... "v": `),
    e.message.slice(0, 300),
  );
  assert.ok(e.message.includes("no \\u001b[2J here\\n"));
  assert.ok(e.message.endsWith("r..."));
  assert.ok(e.message.length < MAX_SHOWN_LENGTH + MAX_REASON_LENGTH + 50);
  assert.equal(e.reason.length, 5000 + "no \u001b[2J here\n".length);
});

Deno.test("Every error escapes control characters in the identifiers it echoes", () => {
  const bad = "id\n\u001b[1A";
  const shown = "id\\n\\u001b[1A";
  const errors: [ZAELimiterError, string][] = [
    [new EntityNotFoundError(bad), `Entity not found: ${shown}`],
    [new EntityExistsError(bad), `Entity already exists: ${shown}`],
    [new StackAlreadyExistsError(bad), `Stack '${shown}' already exists`],
    [new NamespaceNotFoundError(bad), `Namespace '${shown}' not found`],
    [new InfrastructureNotFoundError(bad), `stack '${shown}'`],
    [
      new StackOperationError(bad, "why\nnot"),
      `'${shown}' operation failed: why\\nnot`,
    ],
    [
      new RateLimiterUnavailable("DynamoDB call failed: x\ny", {
        entityId: bad,
        resource: "r\u001b",
      }),
      `DynamoDB call failed: x\\ny [entity=${shown}, resource=r\\u001b]`,
    ],
    [new MinimumClientVersionError("1", bad), `minimum ${shown} recorded`],
    [new VersionMismatchError("1", "1", bad, "m"), `lambda=${shown}.`],
    [new IncompatibleSchemaError("1", bad, "m"), `schema ${shown}.`],
    [
      new RateLimitExceeded([
        status("rpm", true, 1, { entityId: bad, resource: "r\u001b" }),
      ]),
      `Rate limit exceeded for ${shown}/r\\u001b:`,
    ],
    [new ZAELimiterError("VALIDATION_FAILED", bad), shown],
  ];
  for (const [e, expected] of errors) {
    assert.ok(e.message.includes(expected), `${e.name}: ${e.message}`);
    assert.ok(!RAW_CONTROL.test(e.message), `${e.name}: ${e.message}`);
  }
  assert.equal(new EntityNotFoundError(bad).entityId, bad);
  assert.equal(
    new EntityNotFoundError("e".repeat(1000)).message,
    `Entity not found: ${"e".repeat(200)}...`,
  );
});

Deno.test("escapeText() escapes only unsafe characters unless asked for quotes, and cuts at max", () => {
  assert.equal(escapeText('a"b\\c\n'), 'a"b\\c\\n');
  assert.equal(escapeText('a"b\\c\n', { quotes: true }), 'a\\"b\\\\c\\n');
  assert.equal(escapeText("abcdef", { max: 3 }), "abc...");
  assert.equal(escapeText("abc", { max: 3 }), "abc");
});
