/**
 * The exact IAM actions each managed policy and the stream worker's task role
 * grant, as data. `infra/template.ts` builds its policy documents from these
 * lists, and tests compare them with the DynamoDB commands the library issues
 * (spec 06 §1.6, weakness 41: the acquire policies must cover the
 * speculative `UpdateItem`, the bucket-creating `PutItem` and the cascading
 * `TransactWriteItems`).
 *
 * @example Every acquire action is also a full-access action
 * ```ts
 * import assert from "node:assert/strict";
 * import { ACQUIRE_ACTIONS, FULL_ACCESS_ACTIONS } from "./iam_actions.ts";
 *
 * assert.ok(ACQUIRE_ACTIONS.every((action) => FULL_ACCESS_ACTIONS.includes(action)));
 * ```
 *
 * @module
 */

/** A DynamoDB IAM action name, e.g. `"dynamodb:GetItem"`. */
export type DynamoDbAction = `dynamodb:${string}`;

/**
 * Actions of the acquire path: reading configs and buckets, the speculative
 * and single-item `UpdateItem`, bucket creation with `PutItem`, and
 * multi-item / cascading commits with `TransactWriteItems`. `DescribeTable`
 * is not used on the hot path.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ACQUIRE_ACTIONS } from "./iam_actions.ts";
 *
 * assert.ok(ACQUIRE_ACTIONS.includes("dynamodb:UpdateItem"));
 * ```
 */
export const ACQUIRE_ACTIONS = [
  "dynamodb:GetItem",
  "dynamodb:BatchGetItem",
  "dynamodb:Query",
  "dynamodb:PutItem",
  "dynamodb:UpdateItem",
  "dynamodb:TransactWriteItems",
] as const satisfies readonly DynamoDbAction[];

/**
 * Actions of read-only administration: item reads, scans for listings and
 * the table descriptions the `status` / `check` commands read.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { READ_ONLY_ACTIONS } from "./iam_actions.ts";
 *
 * assert.ok(!READ_ONLY_ACTIONS.some((action) => action.endsWith("PutItem")));
 * ```
 */
export const READ_ONLY_ACTIONS = [
  "dynamodb:GetItem",
  "dynamodb:BatchGetItem",
  "dynamodb:Query",
  "dynamodb:Scan",
  "dynamodb:DescribeTable",
  "dynamodb:DescribeTimeToLive",
  "dynamodb:DescribeContinuousBackups",
] as const satisfies readonly DynamoDbAction[];

/**
 * Actions of full administration: everything in {@linkcode READ_ONLY_ACTIONS}
 * plus every item write the library issues.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FULL_ACCESS_ACTIONS, READ_ONLY_ACTIONS } from "./iam_actions.ts";
 *
 * assert.ok(READ_ONLY_ACTIONS.every((action) => FULL_ACCESS_ACTIONS.includes(action)));
 * ```
 */
export const FULL_ACCESS_ACTIONS = [
  ...READ_ONLY_ACTIONS,
  "dynamodb:PutItem",
  "dynamodb:UpdateItem",
  "dynamodb:DeleteItem",
  "dynamodb:BatchWriteItem",
  "dynamodb:TransactWriteItems",
  "dynamodb:ConditionCheckItem",
] as const satisfies readonly DynamoDbAction[];

/**
 * Stream actions of the stream worker, granted on `${TableArn}/stream/*`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { WORKER_STREAM_ACTIONS } from "./iam_actions.ts";
 *
 * assert.ok(WORKER_STREAM_ACTIONS.includes("dynamodb:GetRecords"));
 * ```
 */
export const WORKER_STREAM_ACTIONS = [
  "dynamodb:DescribeStream",
  "dynamodb:GetShardIterator",
  "dynamodb:GetRecords",
  "dynamodb:ListStreams",
] as const satisfies readonly DynamoDbAction[];

/**
 * Table actions of the stream worker (snapshots, refills, shard creation,
 * worker leases, heartbeats, dead letters; `DescribeTable` finds the
 * stream), granted on the table and its indexes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { WORKER_TABLE_ACTIONS } from "./iam_actions.ts";
 *
 * const granted: readonly string[] = WORKER_TABLE_ACTIONS;
 * assert.ok(!granted.includes("dynamodb:Scan"));
 * ```
 */
export const WORKER_TABLE_ACTIONS = [
  "dynamodb:DescribeTable",
  "dynamodb:GetItem",
  "dynamodb:PutItem",
  "dynamodb:UpdateItem",
  "dynamodb:DeleteItem",
  "dynamodb:Query",
  "dynamodb:TransactWriteItems",
  "dynamodb:BatchWriteItem",
] as const satisfies readonly DynamoDbAction[];

/**
 * Every DynamoDB action of the stream worker: {@linkcode WORKER_STREAM_ACTIONS}
 * followed by {@linkcode WORKER_TABLE_ACTIONS}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { WORKER_ACTIONS } from "./iam_actions.ts";
 *
 * assert.equal(WORKER_ACTIONS.length, 12);
 * ```
 */
export const WORKER_ACTIONS = [
  ...WORKER_STREAM_ACTIONS,
  ...WORKER_TABLE_ACTIONS,
] as const satisfies readonly DynamoDbAction[];

/**
 * S3 actions of the stream worker's audit archiver, granted on the objects of
 * the archive bucket only.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { WORKER_S3_ACTIONS } from "./iam_actions.ts";
 *
 * assert.deepEqual(WORKER_S3_ACTIONS, ["s3:PutObject"]);
 * ```
 */
export const WORKER_S3_ACTIONS = ["s3:PutObject"] as const;

/**
 * Actions whose requests carry no partition key, so a
 * `ForAllValues:StringLike` condition on `dynamodb:LeadingKeys` would not
 * restrict them (a missing key makes `ForAllValues` true). Namespace-scoped
 * policies therefore never grant `Scan`, and grant the `Describe*` actions in
 * a separate statement on the table ARN alone.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { UNSCOPABLE_ACTIONS } from "./iam_actions.ts";
 *
 * assert.ok(UNSCOPABLE_ACTIONS.includes("dynamodb:Scan"));
 * ```
 */
export const UNSCOPABLE_ACTIONS = [
  "dynamodb:Scan",
  "dynamodb:DescribeTable",
  "dynamodb:DescribeTimeToLive",
  "dynamodb:DescribeContinuousBackups",
] as const satisfies readonly DynamoDbAction[];

/**
 * Table-metadata actions a namespace-scoped policy may still grant: the
 * `Describe*` members of {@linkcode UNSCOPABLE_ACTIONS}. They reveal the
 * table's settings, not its items.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { TABLE_METADATA_ACTIONS } from "./iam_actions.ts";
 *
 * assert.ok(TABLE_METADATA_ACTIONS.every((action) => action.startsWith("dynamodb:Describe")));
 * ```
 */
export const TABLE_METADATA_ACTIONS = [
  "dynamodb:DescribeTable",
  "dynamodb:DescribeTimeToLive",
  "dynamodb:DescribeContinuousBackups",
] as const satisfies readonly DynamoDbAction[];

/**
 * Actions namespace-scoped policies grant on the reserved namespace `_`
 * (version record, namespace registry): reads only, so no tenant can change
 * table-wide records.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { RESERVED_NAMESPACE_READ_ACTIONS } from "./iam_actions.ts";
 *
 * const granted: readonly string[] = RESERVED_NAMESPACE_READ_ACTIONS;
 * assert.ok(!granted.includes("dynamodb:PutItem"));
 * ```
 */
export const RESERVED_NAMESPACE_READ_ACTIONS = [
  "dynamodb:GetItem",
  "dynamodb:BatchGetItem",
  "dynamodb:Query",
] as const satisfies readonly DynamoDbAction[];

/**
 * The principal tag that carries a namespace-scoped principal's opaque
 * namespace ID (spec 06 §1.6).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { NAMESPACE_TAG_KEY } from "./iam_actions.ts";
 *
 * assert.equal(NAMESPACE_TAG_KEY, "zael_namespace_id");
 * ```
 */
export const NAMESPACE_TAG_KEY = "zael_namespace_id";

/**
 * The item actions a namespace-scoped policy grants under its
 * `dynamodb:LeadingKeys` condition: `actions` without the
 * {@linkcode UNSCOPABLE_ACTIONS}.
 *
 * @param actions The table-level action list of the matching policy.
 * @returns A new array, in the same order, without unscopable actions.
 *
 * @example Namespace read-only access never includes Scan
 * ```ts
 * import assert from "node:assert/strict";
 * import { READ_ONLY_ACTIONS, namespaceScopedActions } from "./iam_actions.ts";
 *
 * assert.deepEqual(namespaceScopedActions(READ_ONLY_ACTIONS), [
 *   "dynamodb:GetItem",
 *   "dynamodb:BatchGetItem",
 *   "dynamodb:Query",
 * ]);
 * ```
 */
export function namespaceScopedActions(
  actions: readonly DynamoDbAction[],
): DynamoDbAction[] {
  const unscopable: readonly string[] = UNSCOPABLE_ACTIONS;
  return actions.filter((action) => !unscopable.includes(action));
}
