import assert from "node:assert/strict";
import { ZAELimiterError, type ZaeLimiterErrorCode } from "../mod.ts";
import { MigrationError } from "../migrations/migration.ts";
import { StreamWorkerError } from "../workers/errors.ts";
import { WorkerStoppedError } from "../workers/runtime.ts";

Deno.test("MigrationError extends ZAELimiterError and keeps its code, details and name", () => {
  const cause = new Error("inner");
  const e = new MigrationError("MIGRATION_LOCKED", "Cannot migrate: locked", {
    cause,
    retryable: true,
    details: { owner: "host-1" },
  });
  assert.ok(e instanceof ZAELimiterError);
  assert.ok(e instanceof Error);
  assert.equal(e.name, "MigrationError");
  assert.equal(e.code, "MIGRATION_LOCKED");
  assert.equal(e.retryable, true);
  assert.equal(e.cause, cause);
  assert.deepEqual(e.details, { owner: "host-1" });
  assert.equal(
    Object.hasOwn(new MigrationError("MIGRATION_DRIFT", "x"), "cause"),
    false,
  );
});

Deno.test("StreamWorkerError extends ZAELimiterError with a server fault", () => {
  const e = new StreamWorkerError("STREAM_THROTTLED", "Cannot read shard", {
    retryable: true,
  });
  assert.ok(e instanceof ZAELimiterError);
  assert.equal(e.name, "StreamWorkerError");
  assert.equal(e.code, "STREAM_THROTTLED");
  assert.equal(e.retryable, true);
  assert.equal(e.fault, "server");
  assert.equal(new StreamWorkerError("STREAM_NOT_FOUND", "x").retryable, false);
});

Deno.test("WorkerStoppedError extends ZAELimiterError with code WORKER_STOPPED", () => {
  const cause = new Error("denied");
  const e = new WorkerStoppedError("Worker stopped: denied", { cause });
  assert.ok(e instanceof ZAELimiterError);
  assert.equal(e.name, "WorkerStoppedError");
  assert.equal(e.code, "WORKER_STOPPED");
  assert.equal(e.cause, cause);
});

Deno.test("ZaeLimiterErrorCode holds the migration, stream and worker codes", () => {
  const codes: ZaeLimiterErrorCode[] = [
    "MIGRATION_LOCKED",
    "MIGRATION_SCHEMA_MISSING",
    "STREAM_DATA_TRIMMED",
    "COORDINATION_CONFLICT",
    "DEPENDENCY_TIMEOUT",
    "WORKER_STOPPED",
    "CONFIG_INVALID",
  ];
  for (const code of codes) {
    assert.equal(new ZAELimiterError(code, "x").code, code);
  }
});
