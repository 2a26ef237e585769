import assert from "node:assert/strict";
import {
  EntityError,
  EntityExistsError,
  EntityNotFoundError,
  IncompatibleSchemaError,
  InfrastructureError,
  InfrastructureNotFoundError,
  InvalidIdentifierError,
  InvalidNameError,
  LeaseDeadlineExceeded,
  LeaseExpiredError,
  MinimumClientVersionError,
  NamespaceNotFoundError,
  NamespaceStateError,
  RateLimitError,
  RateLimiterUnavailable,
  RateLimitExceeded,
  StackAlreadyExistsError,
  StackOperationError,
  StreamBudgetExceeded,
  UsageReportError,
  ValidationError,
  VersionError,
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

function exceededAfter(seconds: number): RateLimitExceeded {
  return new RateLimitExceeded([status("rpm", true, seconds)]);
}

// ---------------------------------------------------------------------------
// RateLimitExceeded

Deno.test("RateLimitExceeded() throws RangeError when there are no statuses", () => {
  assert.throws(() => new RateLimitExceeded([]), RangeError);
});

Deno.test("RateLimitExceeded() throws RangeError when no status is exceeded", () => {
  assert.throws(
    () =>
      new RateLimitExceeded([status("rpm", false, 0), status("tpm", false, 0)]),
    RangeError,
  );
});

Deno.test("RateLimitExceeded() splits statuses into violations and passed", () => {
  const rpm = status("rpm", true, 1.5);
  const tpm = status("tpm", false, 0);
  const rpd = status("rpd", true, 30);
  const e = new RateLimitExceeded([rpm, tpm, rpd]);
  assert.deepEqual(e.statuses, [rpm, tpm, rpd]);
  assert.deepEqual(e.violations, [rpm, rpd]);
  assert.deepEqual(e.passed, [tpm]);
});

Deno.test("RateLimitExceeded.primaryViolation is the violation with the longest wait", () => {
  const short = status("rpm", true, 1.5);
  const long = status("tpm", true, 42.25);
  const middle = status("rph", true, 10);
  const passing = status("rpd", false, 0);
  const e = new RateLimitExceeded([short, passing, long, middle]);
  assert.equal(e.primaryViolation, long);
  assert.equal(e.retryAfterSeconds, 42.25);
});

Deno.test("RateLimitExceeded.primaryViolation ignores passing statuses with longer waits", () => {
  // A passed status should never carry a wait, but it must not win if it does.
  const violation = status("rpm", true, 2);
  const e = new RateLimitExceeded([status("tpm", false, 99), violation]);
  assert.equal(e.primaryViolation, violation);
  assert.equal(e.retryAfterSeconds, 2);
});

Deno.test("RateLimitExceeded.primaryViolation keeps the first of equal waits", () => {
  const first = status("rpm", true, 5);
  const second = status("tpm", true, 5);
  assert.equal(new RateLimitExceeded([first, second]).primaryViolation, first);
});

Deno.test("RateLimitExceeded message lists every violation and the primary wait", () => {
  const e = new RateLimitExceeded([
    status("rpm", true, 1.5, { entityId: "user-1", resource: "gpt-4" }),
    status("tpm", false, 0),
    status("rpd", true, 12.34, { entityId: "org-1", resource: "openai/gpt-4" }),
  ]);
  // Entity and resource come from the primary violation (rpd).
  assert.equal(
    e.message,
    "Rate limit exceeded for org-1/openai/gpt-4: [rpm, rpd]. Retry after 12.3s",
  );
});

Deno.test("RateLimitExceeded message shows the wait with one decimal", () => {
  assert.match(exceededAfter(0.001).message, /Retry after 0\.0s$/);
  assert.match(exceededAfter(2).message, /Retry after 2\.0s$/);
  assert.match(exceededAfter(59.96).message, /Retry after 60\.0s$/);
});

Deno.test("RateLimitExceeded.retryAfterHeader is the whole seconds plus one", () => {
  const cases: [number, string][] = [
    [1.1, "2"],
    [1.9, "2"],
    [2.0, "3"],
    [0.1, "1"],
    [0, "1"],
    [59.999, "60"],
  ];
  for (const [seconds, header] of cases) {
    assert.equal(
      exceededAfter(seconds).retryAfterHeader,
      header,
      String(seconds),
    );
  }
});

Deno.test("RateLimitExceeded.toJSON() returns the reference's as_dict shape", () => {
  const rpm = status("rpm", true, 2.5, {
    available: 0,
    requested: 3,
    limit: Limit.perMinute("rpm", 100),
  });
  const tpm = status("tpm", false, 0, {
    available: 9000,
    requested: 500,
    limit: Limit.perMinute("tpm", 10_000, { burst: 15_000 }),
  });
  const e = new RateLimitExceeded([rpm, tpm]);
  assert.deepEqual(e.toJSON(), {
    error: "rate_limit_exceeded",
    message: "Rate limit exceeded for user-1/gpt-4: [rpm]. Retry after 2.5s",
    retry_after_seconds: 2.5,
    retry_after_ms: 2500,
    limits: [
      {
        entity_id: "user-1",
        resource: "gpt-4",
        limit_name: "rpm",
        capacity: 100,
        refill_amount: 100,
        refill_period_seconds: 60,
        available: 0,
        requested: 3,
        exceeded: true,
        retry_after_seconds: 2.5,
      },
      {
        entity_id: "user-1",
        resource: "gpt-4",
        limit_name: "tpm",
        capacity: 15_000,
        refill_amount: 10_000,
        refill_period_seconds: 60,
        available: 9000,
        requested: 500,
        exceeded: false,
        retry_after_seconds: 0,
      },
    ],
  });
});

Deno.test("RateLimitExceeded.toJSON() truncates retry_after_ms to an integer", () => {
  // int(0.0015 * 1000) = int(1.5) = 1
  assert.equal(exceededAfter(0.0015).toJSON().retry_after_ms, 1);
  assert.equal(exceededAfter(0.601).toJSON().retry_after_ms, 601);
});

Deno.test("RateLimitExceeded serializes through JSON.stringify via toJSON()", () => {
  const e = exceededAfter(1.5);
  assert.deepEqual(JSON.parse(JSON.stringify(e)), e.toJSON());
});

Deno.test("RateLimitExceeded is retryable and the client's fault", () => {
  const e = exceededAfter(1);
  assert.equal(e.code, "RATE_LIMIT_EXCEEDED");
  assert.equal(e.retryable, true);
  assert.equal(e.fault, "client");
});

// ---------------------------------------------------------------------------
// RateLimiterUnavailable

Deno.test("RateLimiterUnavailable message has no brackets without context", () => {
  const e = new RateLimiterUnavailable("DynamoDB timed out");
  assert.equal(e.message, "DynamoDB timed out");
  assert.equal(e.stackName, "");
  assert.equal(e.entityId, "");
  assert.equal(e.resource, "");
});

Deno.test("RateLimiterUnavailable message has no brackets when every context part is empty", () => {
  const e = new RateLimiterUnavailable("boom", {
    stackName: "",
    entityId: "",
    resource: "",
  });
  assert.equal(e.message, "boom");
});

Deno.test("RateLimiterUnavailable message lists all context parts in order", () => {
  const e = new RateLimiterUnavailable("boom", {
    stackName: "zae-limiter",
    entityId: "user-1",
    resource: "gpt-4",
  });
  assert.equal(
    e.message,
    "boom [stack=zae-limiter, entity=user-1, resource=gpt-4]",
  );
  assert.equal(e.stackName, "zae-limiter");
  assert.equal(e.entityId, "user-1");
  assert.equal(e.resource, "gpt-4");
});

Deno.test("RateLimiterUnavailable message lists only the non-empty context parts", () => {
  assert.equal(
    new RateLimiterUnavailable("boom", { entityId: "user-1" }).message,
    "boom [entity=user-1]",
  );
  assert.equal(
    new RateLimiterUnavailable("boom", {
      stackName: "s",
      resource: "openai/gpt-4",
    }).message,
    "boom [stack=s, resource=openai/gpt-4]",
  );
});

Deno.test("RateLimiterUnavailable forwards the cause", () => {
  const cause = new Error("ECONNRESET");
  const e = new RateLimiterUnavailable("boom", { cause, stackName: "s" });
  assert.equal(e.cause, cause);
  assert.equal(e.retryable, true);
  assert.equal(e.fault, "server");
});

Deno.test("RateLimiterUnavailable has no cause property when none is given", () => {
  assert.equal(
    Object.hasOwn(new RateLimiterUnavailable("boom"), "cause"),
    false,
  );
});

// ---------------------------------------------------------------------------
// Other messages and fields

Deno.test("LeaseExpiredError has the reference message", () => {
  assert.equal(new LeaseExpiredError().message, "Lease is no longer active");
});

Deno.test("StackOperationError formats the stack and reason", () => {
  const e = new StackOperationError("zae-limiter", "ROLLBACK_COMPLETE", [
    "event 2",
    "event 1",
  ]);
  assert.equal(
    e.message,
    "Stack 'zae-limiter' operation failed: ROLLBACK_COMPLETE",
  );
  assert.equal(e.stackName, "zae-limiter");
  assert.equal(e.reason, "ROLLBACK_COMPLETE");
  assert.deepEqual(e.events, ["event 2", "event 1"]);
  assert.deepEqual(new StackOperationError("s", "r").events, []);
});

Deno.test("StackAlreadyExistsError formats the stack name", () => {
  const e = new StackAlreadyExistsError("zae-limiter");
  assert.equal(e.message, "Stack 'zae-limiter' already exists");
  assert.equal(e.stackName, "zae-limiter");
});

Deno.test("InfrastructureNotFoundError names the stack", () => {
  const e = new InfrastructureNotFoundError("my-stack");
  assert.equal(e.stackName, "my-stack");
  assert.ok(
    e.message.startsWith("Infrastructure not found for stack 'my-stack'."),
    e.message,
  );
});

Deno.test("NamespaceNotFoundError names the namespace", () => {
  const e = new NamespaceNotFoundError("tenant-alpha");
  assert.equal(e.namespaceName, "tenant-alpha");
  assert.ok(
    e.message.startsWith("Namespace 'tenant-alpha' not found."),
    e.message,
  );
});

Deno.test("NamespaceStateError keeps the message and defaults its context to empty strings", () => {
  const e = new NamespaceStateError("Cannot recover namespace", {
    namespaceName: "t1",
    state: "re-registered",
  });
  assert.equal(e.message, "Cannot recover namespace");
  assert.equal(e.namespaceName, "t1");
  assert.equal(e.state, "re-registered");
  const bare = new NamespaceStateError("x");
  assert.equal(bare.namespaceName, "");
  assert.equal(bare.state, "");
});

Deno.test("EntityNotFoundError and EntityExistsError format the entity id", () => {
  const missing = new EntityNotFoundError("user-1");
  assert.equal(missing.message, "Entity not found: user-1");
  assert.equal(missing.entityId, "user-1");
  const exists = new EntityExistsError("user-2");
  assert.equal(exists.message, "Entity already exists: user-2");
  assert.equal(exists.entityId, "user-2");
});

Deno.test("VersionMismatchError formats all versions and says unknown for a missing lambda version", () => {
  const e = new VersionMismatchError(
    "0.10.0",
    "0.10.0",
    "0.9.0",
    "Run upgrade.",
    true,
  );
  assert.equal(
    e.message,
    "Version mismatch: client=0.10.0, schema=0.10.0, lambda=0.9.0. Run upgrade.",
  );
  assert.equal(e.clientVersion, "0.10.0");
  assert.equal(e.schemaVersion, "0.10.0");
  assert.equal(e.lambdaVersion, "0.9.0");
  assert.equal(e.canAutoUpdate, true);
  const unknown = new VersionMismatchError(
    "0.10.0",
    "0.10.0",
    null,
    "Deploy workers.",
  );
  assert.equal(
    unknown.message,
    "Version mismatch: client=0.10.0, schema=0.10.0, lambda=unknown. Deploy workers.",
  );
  assert.equal(unknown.lambdaVersion, null);
  assert.equal(unknown.canAutoUpdate, false);
});

Deno.test("IncompatibleSchemaError appends the guide URL only when given", () => {
  const bare = new IncompatibleSchemaError("0.10.0", "0.8.0", "Migrate first.");
  assert.equal(
    bare.message,
    "Incompatible schema: client 0.10.0 is not compatible with schema 0.8.0. Migrate first.",
  );
  assert.equal(bare.migrationGuideUrl, null);
  const withUrl = new IncompatibleSchemaError(
    "0.10.0",
    "0.8.0",
    "Migrate first.",
    "https://example.com/m",
  );
  assert.equal(
    withUrl.message,
    "Incompatible schema: client 0.10.0 is not compatible with schema 0.8.0. Migrate first. See: https://example.com/m",
  );
  assert.equal(withUrl.migrationGuideUrl, "https://example.com/m");
  assert.equal(withUrl.clientVersion, "0.10.0");
  assert.equal(withUrl.schemaVersion, "0.8.0");
});

Deno.test("MinimumClientVersionError carries both versions", () => {
  const e = new MinimumClientVersionError("0.9.0", "0.10.0");
  assert.equal(e.clientVersion, "0.9.0");
  assert.equal(e.minimumVersion, "0.10.0");
  assert.match(e.message, /0\.9\.0/);
  assert.match(e.message, /0\.10\.0/);
});

Deno.test("ValidationError carries field, value and reason and names them in the message", () => {
  const e = new ValidationError(
    "entity_id",
    "bad#id",
    "cannot contain '#' (reserved delimiter)",
  );
  assert.equal(e.field, "entity_id");
  assert.equal(e.value, "bad#id");
  assert.equal(e.reason, "cannot contain '#' (reserved delimiter)");
  assert.ok(e.message.startsWith("Invalid entity_id"), e.message);
  assert.ok(
    e.message.endsWith(": cannot contain '#' (reserved delimiter)"),
    e.message,
  );
});

// ---------------------------------------------------------------------------
// Codes, names and the class hierarchy

const HIERARCHY: [
  Error,
  string,
  string,
  ...(abstract new (...args: never[]) => Error)[],
][] = [
  [
    exceededAfter(1),
    "RateLimitExceeded",
    "RATE_LIMIT_EXCEEDED",
    RateLimitError,
  ],
  [
    new LeaseExpiredError(),
    "LeaseExpiredError",
    "LEASE_EXPIRED",
    RateLimitError,
  ],
  [
    new LeaseDeadlineExceeded("commit", { entityId: "e", resource: "r" }, 1, 5),
    "LeaseDeadlineExceeded",
    "LEASE_DEADLINE_EXCEEDED",
    RateLimitError,
  ],
  [
    new StreamBudgetExceeded("otpm", 10, 12),
    "StreamBudgetExceeded",
    "STREAM_BUDGET_EXCEEDED",
    RateLimitError,
  ],
  [
    new UsageReportError([{ path: "usage.x", message: "is missing" }], {}),
    "UsageReportError",
    "USAGE_INVALID",
    ValidationError,
  ],
  [
    new RateLimiterUnavailable("x"),
    "RateLimiterUnavailable",
    "RATE_LIMITER_UNAVAILABLE",
    InfrastructureError,
  ],
  [
    new StackOperationError("s", "r"),
    "StackOperationError",
    "STACK_OPERATION_FAILED",
    InfrastructureError,
  ],
  [
    new StackAlreadyExistsError("s"),
    "StackAlreadyExistsError",
    "STACK_ALREADY_EXISTS",
    InfrastructureError,
  ],
  [
    new InfrastructureNotFoundError("s"),
    "InfrastructureNotFoundError",
    "INFRASTRUCTURE_NOT_FOUND",
    InfrastructureError,
  ],
  [
    new NamespaceNotFoundError("n"),
    "NamespaceNotFoundError",
    "NAMESPACE_NOT_FOUND",
    InfrastructureError,
  ],
  [
    new NamespaceStateError("m"),
    "NamespaceStateError",
    "NAMESPACE_STATE",
    InfrastructureError,
  ],
  [
    new EntityNotFoundError("e"),
    "EntityNotFoundError",
    "ENTITY_NOT_FOUND",
    EntityError,
  ],
  [
    new EntityExistsError("e"),
    "EntityExistsError",
    "ENTITY_EXISTS",
    EntityError,
  ],
  [
    new VersionMismatchError("1", "1", null, "m"),
    "VersionMismatchError",
    "VERSION_MISMATCH",
    VersionError,
  ],
  [
    new IncompatibleSchemaError("1", "2", "m"),
    "IncompatibleSchemaError",
    "INCOMPATIBLE_SCHEMA",
    VersionError,
  ],
  [
    new MinimumClientVersionError("1", "2"),
    "MinimumClientVersionError",
    "MINIMUM_CLIENT_VERSION",
    VersionError,
  ],
  [new ValidationError("f", "v", "r"), "ValidationError", "VALIDATION_FAILED"],
  [
    new InvalidIdentifierError("f", "v", "r"),
    "InvalidIdentifierError",
    "INVALID_IDENTIFIER",
    ValidationError,
  ],
  [
    new InvalidNameError("f", "v", "r"),
    "InvalidNameError",
    "INVALID_NAME",
    ValidationError,
  ],
];

Deno.test("ZAELimiterError subclasses each carry a stable code and their class name", () => {
  for (const [error, name, code] of HIERARCHY) {
    assert.equal(error.name, name);
    assert.equal((error as ZAELimiterError).code, code, name);
    assert.equal(error.constructor.name, name);
  }
});

Deno.test("ZAELimiterError subclasses descend from their group, ZAELimiterError and Error", () => {
  for (const [error, name, , ...parents] of HIERARCHY) {
    for (const parent of parents) {
      assert.ok(error instanceof parent, `${name} instanceof ${parent.name}`);
    }
    assert.ok(
      error instanceof ZAELimiterError,
      `${name} instanceof ZAELimiterError`,
    );
    assert.ok(error instanceof Error, `${name} instanceof Error`);
  }
});

Deno.test("ZAELimiterError subclasses belong to exactly one group", () => {
  const groups = [
    RateLimitError,
    InfrastructureError,
    EntityError,
    VersionError,
    ValidationError,
  ];
  for (const [error, name] of HIERARCHY) {
    const matching = groups.filter((g) => error instanceof g).map((g) =>
      g.name
    );
    assert.equal(matching.length, 1, `${name} is in ${matching.join(", ")}`);
  }
});

Deno.test("ZAELimiterError subclasses never share a code", () => {
  const codes = HIERARCHY.map(([e]) => (e as ZAELimiterError).code);
  assert.equal(new Set(codes).size, codes.length);
});

Deno.test("ZAELimiterError.fault names who must act for every subclass", () => {
  const server = [
    new RateLimiterUnavailable("x"),
    new StackOperationError("s", "r"),
    new InfrastructureNotFoundError("s"),
    new VersionMismatchError("1", "1", null, "m"),
    new IncompatibleSchemaError("1", "2", "m"),
    new MinimumClientVersionError("1", "2"),
  ];
  const client = [
    exceededAfter(1),
    new LeaseExpiredError(),
    new StackAlreadyExistsError("s"),
    new NamespaceNotFoundError("n"),
    new NamespaceStateError("m"),
    new EntityNotFoundError("e"),
    new EntityExistsError("e"),
    new ValidationError("f", "v", "r"),
    new InvalidIdentifierError("f", "v", "r"),
    new InvalidNameError("f", "v", "r"),
  ];
  for (const e of server) assert.equal(e.fault, "server", e.name);
  for (const e of client) assert.equal(e.fault, "client", e.name);
});

Deno.test("ZAELimiterError.retryable is true only for RateLimitExceeded and RateLimiterUnavailable", () => {
  for (const [error, name] of HIERARCHY) {
    const expected = name === "RateLimitExceeded" ||
      name === "RateLimiterUnavailable";
    assert.equal((error as ZAELimiterError).retryable, expected, name);
  }
});

Deno.test("EntityExistsError can be matched with assert.throws on name, code and fields", () => {
  assert.throws(() => {
    throw new EntityExistsError("user-1");
  }, { name: "EntityExistsError", code: "ENTITY_EXISTS", entityId: "user-1" });
});
