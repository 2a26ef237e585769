import assert from "node:assert/strict";
import { toError, ZAELimiterError } from "./zae_limiter_error.ts";

Deno.test("ZAELimiterError stores code, message and cause", () => {
  const cause = new Error("inner");
  const e = new ZAELimiterError("VALIDATION_FAILED", "Cannot do it", { cause });
  assert.equal(e.name, "ZAELimiterError");
  assert.equal(e.code, "VALIDATION_FAILED");
  assert.equal(e.message, "Cannot do it");
  assert.equal(e.cause, cause);
  assert.equal(e.retryable, false);
  assert.equal(e.fault, "client");
  assert.ok(typeof e.stack === "string" && e.stack.includes("ZAELimiterError"));
});

Deno.test("ZAELimiterError has no cause property when none is given", () => {
  assert.equal(
    Object.hasOwn(new ZAELimiterError("VALIDATION_FAILED", "x"), "cause"),
    false,
  );
});

Deno.test("ZAELimiterError escapes control characters in its message", () => {
  assert.equal(
    new ZAELimiterError("CONFIG_INVALID", "a\nb\u001b").message,
    "a\\nb\\u001b",
  );
});

Deno.test("toError() keeps an Error and wraps anything else", () => {
  const e = new RangeError("x");
  assert.equal(toError(e), e);
  assert.equal(toError(42).message, "Non-error thrown: 42");
  assert.ok(toError(undefined) instanceof Error);
});
