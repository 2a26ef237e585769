/**
 * The version record (`_/SYSTEM#` / `#VERSION`; `SYSTEM#` / `#VERSION` on a
 * pre-0.10 table): its one codec and its reads and write, shared by the
 * repository, the migrations and the CLI.
 *
 * @module
 */
import { GetItemCommand, PutItemCommand } from "@aws-sdk/client-dynamodb";
import { type Clock, isoSeconds } from "../clock.ts";
import { type Item, str } from "../expr.ts";
import { pkSystem, RESERVED_NAMESPACE, SK } from "../keys.ts";
import {
  IncompatibleSchemaError,
  MinimumClientVersionError,
} from "../errors.ts";
import { CLIENT_VERSION, SCHEMA_VERSION } from "../schema.ts";
import { checkCompatibility, type VersionRecord } from "../version.ts";
import type { SdkClient } from "./table.ts";

/** Partition key of the version record from schema 0.10 on. */
export const VERSION_PK: string = pkSystem(RESERVED_NAMESPACE);
/** Partition key of the version record below schema 0.10 (unprefixed). */
export const LEGACY_VERSION_PK = "SYSTEM#";

/** The key of the version record (`legacy`: where a pre-0.10 table keeps it). */
export function versionKey(legacy = false): Item {
  return {
    PK: { S: legacy ? LEGACY_VERSION_PK : VERSION_PK },
    SK: { S: SK.VERSION },
  };
}

/** A stored version record as a {@linkcode VersionRecord} (missing fields as the reference reads them). */
export function decodeVersionRecord(item: Item): VersionRecord {
  return {
    schemaVersion: str(item, "schema_version") ?? "1.0.0",
    clientMinVersion: str(item, "client_min_version") ?? "0.0.0",
    lambdaVersion: str(item, "lambda_version"),
    updatedAt: str(item, "updated_at"),
    updatedBy: str(item, "updated_by"),
  };
}

/** What {@linkcode encodeVersionRecord} writes; omitted fields are stored as the reference does. */
export type VersionRecordInput =
  & Partial<VersionRecord>
  & { readonly schemaVersion: string };

/** The item of a version record at the 0.10 key, stamped `updated_at` = `nowMs`. */
export function encodeVersionRecord(
  record: VersionRecordInput,
  nowMs: number,
): Item {
  return {
    ...versionKey(),
    "schema_version": { S: record.schemaVersion },
    "client_min_version": { S: record.clientMinVersion ?? "0.0.0" },
    "lambda_version": record.lambdaVersion
      ? { S: record.lambdaVersion }
      : { NULL: true },
    "updated_at": { S: isoSeconds(nowMs) },
    "updated_by": record.updatedBy ? { S: record.updatedBy } : { NULL: true },
    GSI4PK: { S: RESERVED_NAMESPACE },
    GSI4SK: { S: VERSION_PK },
  };
}

/** Where to read the record (a `TableClient` fits). */
export interface VersionSource {
  /** The client. */
  readonly client: SdkClient;
  /** Table name. */
  readonly name: string;
}

/** Where to write the record (a `TableClient` fits). */
export interface VersionTable extends VersionSource {
  /** Clock for `updated_at`. */
  readonly clock: Clock;
}

/** The stored version record item (strongly consistent), or `undefined`. */
export async function readVersionItem(
  table: VersionSource,
  options: { legacy?: boolean } = {},
): Promise<Item | undefined> {
  const out = await table.client.send(
    new GetItemCommand({
      TableName: table.name,
      Key: versionKey(options.legacy ?? false),
      ConsistentRead: true,
    }),
  );
  return out.Item;
}

/** The version record at the 0.10 key (or the legacy one), or `null`. */
export async function readVersionRecord(
  table: VersionSource,
  options: { legacy?: boolean } = {},
): Promise<VersionRecord | null> {
  const item = await readVersionItem(table, options);
  return item ? decodeVersionRecord(item) : null;
}

/** Writes the version record at the 0.10 key (unconditional Put, as the reference). */
export async function writeVersionRecord(
  table: VersionTable,
  record: VersionRecordInput,
): Promise<void> {
  await table.client.send(
    new PutItemCommand({
      TableName: table.name,
      Item: encodeVersionRecord(record, table.clock.now()),
    }),
  );
}

/**
 * The version gate: refuses a table whose schema this client cannot use or
 * that requires a newer client.
 *
 * @throws {IncompatibleSchemaError} the table needs a migration
 * @throws {MinimumClientVersionError} the table requires a newer client
 */
export function enforceVersion(record: VersionRecord): void {
  const r = checkCompatibility({
    clientVersion: CLIENT_VERSION,
    schemaVersion: SCHEMA_VERSION,
  }, record);
  for (const issue of r.issues) {
    if (issue.kind === "schema_incompatible") {
      throw new IncompatibleSchemaError(
        SCHEMA_VERSION,
        record.schemaVersion,
        `Migration required: ${issue.action}.`,
      );
    }
    if (issue.kind === "client_too_old") {
      throw new MinimumClientVersionError(CLIENT_VERSION, issue.minimum);
    }
  }
}

/**
 * A pre-0.10 table keeps its version record unprefixed: refuse it with the
 * migration to run.
 *
 * @throws {IncompatibleSchemaError} when the legacy record exists
 */
export async function rejectLegacyTable(
  table: VersionSource,
): Promise<void> {
  const item = await readVersionItem(table, { legacy: true });
  if (item) {
    const legacy = str(item, "schema_version") ?? "1.0.0";
    throw new IncompatibleSchemaError(
      SCHEMA_VERSION,
      legacy,
      `Migration required: run 'zae-limiter migrate apply --to ${SCHEMA_VERSION}' (namespace-keys migration).`,
    );
  }
}
