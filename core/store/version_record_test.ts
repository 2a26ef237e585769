import assert from "node:assert/strict";
import { CLIENT_VERSION, SCHEMA_VERSION } from "../schema.ts";
import {
  decodeVersionRecord,
  encodeVersionRecord,
  enforceVersion,
  LEGACY_VERSION_PK,
  VERSION_PK,
  versionKey,
} from "./version_record.ts";

Deno.test("encodeVersionRecord() writes the 0.10 key and decodeVersionRecord() reads it back", () => {
  const item = encodeVersionRecord({
    schemaVersion: "0.10.0",
    clientMinVersion: "0.9.0",
    updatedBy: "cli:0.10.0",
  }, Date.UTC(2026, 0, 2, 3, 4, 5, 678));
  assert.deepEqual(item["PK"], { S: "_/SYSTEM#" });
  assert.deepEqual(item["SK"], { S: "#VERSION" });
  assert.deepEqual(item["lambda_version"], { NULL: true });
  assert.deepEqual(item["GSI4PK"], { S: "_" });
  assert.deepEqual(item["GSI4SK"], { S: "_/SYSTEM#" });
  assert.deepEqual(decodeVersionRecord(item), {
    schemaVersion: "0.10.0",
    clientMinVersion: "0.9.0",
    lambdaVersion: null,
    updatedAt: "2026-01-02T03:04:05Z",
    updatedBy: "cli:0.10.0",
  });
});

Deno.test("decodeVersionRecord() fills what a sparse record leaves out as the reference does", () => {
  assert.deepEqual(decodeVersionRecord({}), {
    schemaVersion: "1.0.0",
    clientMinVersion: "0.0.0",
    lambdaVersion: null,
    updatedAt: null,
    updatedBy: null,
  });
});

Deno.test("versionKey() names the 0.10 key, or the unprefixed one of a pre-0.10 table", () => {
  assert.equal(VERSION_PK, "_/SYSTEM#");
  assert.equal(LEGACY_VERSION_PK, "SYSTEM#");
  assert.deepEqual(versionKey(), {
    PK: { S: "_/SYSTEM#" },
    SK: { S: "#VERSION" },
  });
  assert.deepEqual(versionKey(true), {
    PK: { S: "SYSTEM#" },
    SK: { S: "#VERSION" },
  });
});

Deno.test("enforceVersion() passes this client's schema and refuses a table that requires a newer client", () => {
  enforceVersion({
    schemaVersion: SCHEMA_VERSION,
    clientMinVersion: CLIENT_VERSION,
    lambdaVersion: null,
    updatedAt: null,
    updatedBy: null,
  });
  assert.throws(
    () =>
      enforceVersion({
        schemaVersion: SCHEMA_VERSION,
        clientMinVersion: "99.0.0",
        lambdaVersion: null,
        updatedAt: null,
        updatedBy: null,
      }),
    { name: "MinimumClientVersionError" },
  );
  assert.throws(
    () =>
      enforceVersion({
        schemaVersion: "99.0.0",
        clientMinVersion: "0.0.0",
        lambdaVersion: null,
        updatedAt: null,
        updatedBy: null,
      }),
    { name: "IncompatibleSchemaError" },
  );
});
