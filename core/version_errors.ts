/**
 * Version errors: the table's schema or the client's version does not fit
 * (spec 06). Re-exported by `errors.ts`.
 *
 * @module
 */
import {
  ZAELimiterError,
  type ZaeLimiterErrorCode,
} from "./zae_limiter_error.ts";
import { echo } from "./_escape_text.ts";

/** Parent of version errors. */
export class VersionError extends ZAELimiterError {
  /** @internal */
  constructor(code: ZaeLimiterErrorCode, message: string) {
    super(code, message, { fault: "server" });
    this.name = "VersionError";
  }
}

/** The stream workers are older than this client: run `zae-limiter upgrade --workers-only`. */
export class VersionMismatchError extends VersionError {
  /** This client's version. */
  readonly clientVersion: string;
  /** The table's schema version. */
  readonly schemaVersion: string;
  /** The workers' version, or `null` when unknown. */
  readonly lambdaVersion: string | null;
  /** Whether an automatic update is possible. Always `false` here. */
  readonly canAutoUpdate: boolean;
  /** Creates the error. */
  constructor(
    clientVersion: string,
    schemaVersion: string,
    lambdaVersion: string | null,
    message: string,
    canAutoUpdate = false,
  ) {
    super(
      "VERSION_MISMATCH",
      `Version mismatch: client=${echo(clientVersion)}, schema=${
        echo(schemaVersion)
      }, lambda=${
        lambdaVersion === null ? "unknown" : echo(lambdaVersion)
      }. ${message}`,
    );
    this.name = "VersionMismatchError";
    this.clientVersion = clientVersion;
    this.schemaVersion = schemaVersion;
    this.lambdaVersion = lambdaVersion;
    this.canAutoUpdate = canAutoUpdate;
  }
}

/** The table's schema needs a migration before this client can use it. */
export class IncompatibleSchemaError extends VersionError {
  /** This client's schema version. */
  readonly clientVersion: string;
  /** The table's schema version. */
  readonly schemaVersion: string;
  /** Where the migration is documented, or `null`. */
  readonly migrationGuideUrl: string | null;
  /** Creates the error. */
  constructor(
    clientVersion: string,
    schemaVersion: string,
    message: string,
    migrationGuideUrl: string | null = null,
  ) {
    super(
      "INCOMPATIBLE_SCHEMA",
      `Incompatible schema: client ${
        echo(clientVersion)
      } is not compatible with schema ${echo(schemaVersion)}. ${message}` +
        (migrationGuideUrl ? ` See: ${migrationGuideUrl}` : ""),
    );
    this.name = "IncompatibleSchemaError";
    this.clientVersion = clientVersion;
    this.schemaVersion = schemaVersion;
    this.migrationGuideUrl = migrationGuideUrl;
  }
}

/** The table records a minimum client version above this client's. */
export class MinimumClientVersionError extends VersionError {
  /** This client's version. */
  readonly clientVersion: string;
  /** The minimum the table requires. */
  readonly minimumVersion: string;
  /** Creates the error. */
  constructor(clientVersion: string, minimumVersion: string) {
    super(
      "MINIMUM_CLIENT_VERSION",
      `Client version ${echo(clientVersion)} is below the minimum ${
        echo(minimumVersion)
      } recorded in the table. ` +
        `Install zae-limiter ${echo(minimumVersion)} or newer.`,
    );
    this.name = "MinimumClientVersionError";
    this.clientVersion = clientVersion;
    this.minimumVersion = minimumVersion;
  }
}
