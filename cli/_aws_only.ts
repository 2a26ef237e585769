/**
 * Internal: one clear line when an AWS-only operation (backups, point-in-time
 * recovery, CloudFormation stacks) is sent to a local endpoint that does not
 * have it. DynamoDB Local answers such calls with
 * `UnknownOperationException`, and a CloudFormation call with a body the SDK
 * cannot parse; both become a {@linkcode CliExit} naming what is missing and
 * what to do instead. An emulator that does implement the call (LocalStack)
 * is left alone.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isUnsupportedLocally } from "./_aws_only.ts";
 *
 * const e = Object.assign(new Error("An unknown operation was requested."), { name: "UnknownOperationException" });
 * assert.equal(isUnsupportedLocally(e), true);
 * assert.equal(isUnsupportedLocally(new Error("ResourceNotFoundException")), false);
 * ```
 *
 * @module
 */
import { errorName } from "../core/_sdk_errors.ts";
import { CliExit, EXIT, type GlobalConfig } from "./_context.ts";

/** Whether an SDK error says the endpoint does not implement the operation. */
export function isUnsupportedLocally(e: unknown): boolean {
  const name = errorName(e);
  if (name === "UnknownOperationException") return true;
  const message = e instanceof Error ? e.message : String(e);
  return /XML parse error|Deserialization error|UnknownOperation/i.test(
    message,
  );
}

/** What the local endpoint lacks, and the alternative to name. */
export interface AwsOnlyFeature {
  /** The action, as in "Cannot <action>", e.g. `create a backup of table 'x'`. */
  readonly action: string;
  /** What DynamoDB Local does not have, e.g. `on-demand backups`. */
  readonly missing: string;
  /** What to do instead. */
  readonly instead: string;
}

/**
 * Runs `op`; when `--endpoint-url` is set and the endpoint does not
 * implement the operation, fails with one line:
 * `Cannot <action>: <endpoint> (DynamoDB Local) has no <missing>; <instead>`.
 *
 * @throws {CliExit} exit 1 as above; any other error unchanged
 */
export async function awsOnly<T>(
  g: GlobalConfig,
  feature: AwsOnlyFeature,
  op: () => Promise<T>,
): Promise<T> {
  try {
    return await op();
  } catch (e) {
    if (g.endpointUrl === undefined || !isUnsupportedLocally(e)) throw e;
    throw new CliExit(
      EXIT.FAILURE,
      `Cannot ${feature.action}: ${g.endpointUrl} (DynamoDB Local) has no ${feature.missing}, which only AWS provides; ${feature.instead}`,
      { cause: e },
    );
  }
}

/** The alternative to backups and restores on DynamoDB Local. */
export const LOCAL_BACKUP_INSTEAD =
  "locally, stop DynamoDB Local ('zae-limiter local down') and copy its --data-dir (default .zae-limiter/dynamodb-local), then 'local up --data-dir <copy>' to use the copy";
