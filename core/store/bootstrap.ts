/**
 * What `Repository.open` does on the table before a repository exists: one
 * read of the namespace's forward record and the version record, the table
 * created only when asked to provision, the version gate, and the namespace
 * resolved (registered only when allowed). Without `provision` or
 * `registerNamespace` it writes nothing.
 *
 * @module
 */
import { errorName, isResourceNotFound } from "../_sdk_errors.ts";
import {
  InfrastructureNotFoundError,
  NamespaceNotFoundError,
  RateLimiterUnavailable,
  ValidationError,
  ZAELimiterError,
} from "../errors.ts";
import { type Item, str } from "../expr.ts";
import { DEFAULT_NAMESPACE, SK, skNamespace } from "../keys.ts";
import { CLIENT_VERSION, SCHEMA_VERSION } from "../schema.ts";
import { NamespaceStore } from "./namespace_store.ts";
import type { TableClient } from "./table.ts";
import { createTableIfMissing } from "./table_admin.ts";
import {
  decodeVersionRecord,
  enforceVersion,
  rejectLegacyTable,
  VERSION_PK,
  versionKey,
  writeVersionRecord,
} from "./version_record.ts";

/** Options of {@linkcode bootstrapNamespace}. */
export interface BootstrapOptions {
  /** The namespace name (validated). */
  readonly namespace: string;
  /** Create the table when it is missing (and write the version record). */
  readonly provision?: boolean | undefined;
  /** Register the namespace when it is unknown. */
  readonly registerNamespace?: boolean | undefined;
  /** Skip the version gate. */
  readonly skipVersionCheck?: boolean | undefined;
}

/**
 * Checks the table and resolves the namespace's id, recording it in `ids`.
 *
 * @throws {InfrastructureNotFoundError} the table (or its version record) is missing and `provision` is off
 * @throws {NamespaceNotFoundError} the namespace is not registered
 * @throws {IncompatibleSchemaError} the table needs a migration
 * @throws {MinimumClientVersionError} the table requires a newer client
 */
export async function bootstrapNamespace(
  io: TableClient,
  ids: Map<string, string>,
  options: BootstrapOptions,
): Promise<string> {
  const nsName = options.namespace;
  const namespaces = new NamespaceStore(io, ids);
  // One round trip: the namespace's forward record and the version record.
  let forward: Item | undefined;
  let version: Item | undefined;
  let created = false;
  try {
    const got = await io.batchGet([
      { PK: { S: VERSION_PK }, SK: { S: skNamespace(nsName) } },
      versionKey(),
    ], true);
    forward = got.find((i) => str(i, "SK") === skNamespace(nsName));
    version = got.find((i) => str(i, "SK") === SK.VERSION);
  } catch (e) {
    if (!isResourceNotFound(e)) throw e;
    if (!options.provision) throw new InfrastructureNotFoundError(io.name);
    await createTableIfMissing(io);
    created = true;
  }
  // Writes happen only on a table this call created, or when asked to
  // provision: opening is otherwise read-only (the CLI's read commands rely on it).
  const mayWrite = created || options.provision === true;
  if (!version) {
    if (!created && !options.skipVersionCheck) await rejectLegacyTable(io);
    if (mayWrite) {
      await writeVersionRecord(io, {
        schemaVersion: SCHEMA_VERSION,
        updatedBy: `client:${CLIENT_VERSION}`,
      });
    } else if (!options.skipVersionCheck) {
      throw new InfrastructureNotFoundError(io.name);
    }
  } else if (!options.skipVersionCheck) {
    enforceVersion(decodeVersionRecord(version));
  }
  let nsId: string | undefined;
  if (forward && str(forward, "status") === "active") {
    nsId = str(forward, "namespace_id") ?? undefined;
  }
  if (nsId === undefined) {
    const mayRegister = options.registerNamespace === true ||
      (mayWrite && nsName === DEFAULT_NAMESPACE);
    if (!mayRegister && !created) throw new NamespaceNotFoundError(nsName);
    nsId = await namespaces.registerNamespace(nsName);
  }
  if (created && nsName !== DEFAULT_NAMESPACE) {
    await namespaces.registerNamespace(DEFAULT_NAMESPACE);
  }
  ids.set(nsName, nsId);
  return nsId;
}

/** What `Repository.open` throws for an error of the table named `stack`: library errors as they are, the rest classified. */
export function openError(e: unknown, stack: string): Error {
  if (e instanceof ZAELimiterError) return e;
  if (errorName(e) === "ValidationException") {
    // DynamoDB refused the request itself (e.g. a table name it does not accept).
    return new ValidationError(
      "stack",
      stack,
      `DynamoDB refused it: ${e instanceof Error ? e.message : String(e)}`,
    );
  }
  return new RateLimiterUnavailable(
    `Could not open the table: ${e instanceof Error ? e.message : String(e)}`,
    { cause: e, stackName: stack },
  );
}
