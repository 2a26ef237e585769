/**
 * Helpers for integration tests that check the stored format: raw reads with
 * the SDK (bypassing the library), attribute accessors, a client whose
 * network can be cut, and the write-command count of a {@linkcode CallCounter}.
 */
import {
  type AttributeValue,
  type DynamoDBClient,
  GetItemCommand,
  ScanCommand,
} from "@aws-sdk/client-dynamodb";
import type { DynamoDbClientLike, Repository } from "../../mod.ts";
import type { CallCounter } from "./_harness.ts";

/** A raw DynamoDB item. */
export type RawItem = Record<string, AttributeValue>;

/** Reads one item by key, strongly consistent, with the raw SDK client. */
export async function rawGet(
  client: DynamoDBClient,
  table: string,
  pk: string,
  sk: string,
): Promise<RawItem | undefined> {
  const out = await client.send(
    new GetItemCommand({
      TableName: table,
      Key: { PK: { S: pk }, SK: { S: sk } },
      ConsistentRead: true,
    }),
  );
  return out.Item;
}

/** The raw shard-0 (or `shard`) bucket item of an entity and resource in `repo`'s namespace. */
export function rawBucket(
  client: DynamoDBClient,
  repo: Repository,
  entityId: string,
  resource: string,
  shard = 0,
): Promise<RawItem | undefined> {
  return rawGet(
    client,
    repo.tableName,
    repo.bucketPk(entityId, resource, shard),
    "#STATE",
  );
}

/** Every item of the table (all pages, consistent). */
export async function scanAll(
  client: DynamoDBClient,
  table: string,
): Promise<RawItem[]> {
  const items: RawItem[] = [];
  let start: RawItem | undefined;
  do {
    const out = await client.send(
      new ScanCommand({
        TableName: table,
        ConsistentRead: true,
        ...(start ? { ExclusiveStartKey: start } : {}),
      }),
    );
    items.push(...(out.Items ?? []));
    start = out.LastEvaluatedKey;
  } while (start);
  return items;
}

/** A numeric attribute as a JS number; fails the test when it is missing or not a number. */
export function num(item: RawItem | undefined, attr: string): number {
  const v = item?.[attr];
  if (!v || v.N === undefined) {
    throw new Error(
      `attribute ${attr} is not a number in ${JSON.stringify(item)}`,
    );
  }
  return Number(v.N);
}

/** A string attribute; fails the test when it is missing or not a string. */
export function text(item: RawItem | undefined, attr: string): string {
  const v = item?.[attr];
  if (!v || v.S === undefined) {
    throw new Error(
      `attribute ${attr} is not a string in ${JSON.stringify(item)}`,
    );
  }
  return v.S;
}

/** The commands that write. */
export const WRITE_COMMANDS: readonly string[] = [
  "PutItemCommand",
  "UpdateItemCommand",
  "TransactWriteItemsCommand",
  "DeleteItemCommand",
  "BatchWriteItemCommand",
];

/** How many write commands a counter has seen. */
export function writeCount(calls: CallCounter): number {
  let total = 0;
  for (const name of WRITE_COMMANDS) total += calls.counts.get(name) ?? 0;
  return total;
}

/** A client that forwards to `inner` until {@linkcode breakable}'s `cut()` is called, then fails like a dead network. */
export function breakable(inner: DynamoDbClientLike): {
  client: DynamoDbClientLike;
  cut(): void;
  restore(): void;
  readonly failures: number;
} {
  let broken = false;
  let failures = 0;
  const send = inner.send.bind(inner) as (
    ...args: unknown[]
  ) => Promise<unknown>;
  const client = {
    send: (...args: unknown[]): Promise<unknown> => {
      if (!broken) return send(...args);
      failures++;
      const e = new Error("connect ECONNREFUSED 127.0.0.1:1");
      e.name = "NetworkingError";
      return Promise.reject(e);
    },
  } as unknown as DynamoDbClientLike;
  return {
    client,
    cut: () => {
      broken = true;
    },
    restore: () => {
      broken = false;
    },
    get failures() {
      return failures;
    },
  };
}
