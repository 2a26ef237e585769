/**
 * The table helper: the one client interface the library talks to DynamoDB
 * through, a typed `send` bound to one table, and the batch helpers every
 * store shares (BatchGetItem and BatchWriteItem with unprocessed items
 * retried, every page of a query, a one-item write or a transaction).
 *
 * {@linkcode tableOf} gives the CLI, the workers, the migrations and the
 * tests the helper of an open repository; it is not on the public class.
 *
 * @module
 */
import {
  type AttributeValue,
  BatchGetItemCommand,
  type BatchGetItemCommandOutput,
  BatchWriteItemCommand,
  type BatchWriteItemCommandOutput,
  DeleteItemCommand,
  type DynamoDBClient,
  PutItemCommand,
  QueryCommand,
  type QueryCommandInput,
  type QueryCommandOutput,
  type TransactWriteItem,
  TransactWriteItemsCommand,
  UpdateItemCommand,
  type WriteRequest,
} from "@aws-sdk/client-dynamodb";
import type { Clock } from "../clock.ts";

/** One DynamoDB item (or key) in the SDK's attribute-value form. */
type Item = Record<string, AttributeValue>;

/**
 * The part of an AWS SDK v3 `DynamoDBClient` the library uses: `send`. A
 * `DynamoDBClient` fits as is; a fake may implement just this.
 */
export interface DynamoDbClientLike {
  /** Sends an SDK command and resolves to its output. */
  send(
    command: unknown,
    options?: { abortSignal?: AbortSignal },
  ): Promise<unknown>;
}

/** The SDK's typed `send`, which every {@linkcode DynamoDbClientLike} is at run time. */
export type SdkClient = Pick<DynamoDBClient, "send">;

/** The client view of one table: typed sends and the batch helpers. */
export interface TableClient {
  /** Table name. */
  readonly name: string;
  /** The client, with the SDK's typed `send`. */
  readonly client: SdkClient;
  /** The clock (retry waits, timestamps). */
  readonly clock: Clock;
  /** Sends any SDK command and resolves to its output, typed by the caller. */
  send<T>(command: unknown): Promise<T>;
  /**
   * Reads items by key with as few BatchGetItem calls as possible
   * (100 keys a call, unprocessed keys retried with backoff).
   */
  batchGet(keys: readonly Item[], consistent?: boolean): Promise<Item[]>;
  /**
   * Sends write requests in batches of 25, retrying unprocessed items until
   * none are left; resolves to the number of requests.
   */
  batchWrite(requests: readonly WriteRequest[]): Promise<number>;
  /** Deletes keys with {@linkcode TableClient.batchWrite}; resolves to the number of keys. */
  batchDelete(keys: readonly Item[]): Promise<number>;
  /** Yields each page of a query on this table. */
  queryPages(
    input: Omit<QueryCommandInput, "TableName">,
    signal?: AbortSignal,
  ): AsyncGenerator<Item[]>;
  /** Every item of a query on this table (all pages). */
  queryAll(
    input: Omit<QueryCommandInput, "TableName">,
    signal?: AbortSignal,
  ): Promise<Item[]>;
  /** Sends a one-item write as itself, or several as one transaction. */
  writeItems(items: readonly TransactWriteItem[]): Promise<void>;
}

/** Options of {@linkcode createTableClient}. */
export interface TableClientOptions {
  /** Table name. */
  readonly tableName: string;
  /** Clock whose `sleep` spaces the retries of unprocessed items. */
  readonly clock: Clock;
}

/** The part of a DynamoDB client a paged query needs. */
export interface QueryClient {
  /** Sends one command. */
  send(
    command: QueryCommand,
    options?: { abortSignal?: AbortSignal },
  ): Promise<unknown>;
}

/**
 * Yields the items of each page of a query until DynamoDB reports no
 * `LastEvaluatedKey` (a response without `Items` is an empty page).
 */
export async function* queryPages(
  client: QueryClient,
  input: QueryCommandInput,
  signal?: AbortSignal,
): AsyncGenerator<Item[]> {
  let start: Item | undefined;
  do {
    signal?.throwIfAborted();
    const page = await client.send(
      new QueryCommand({
        ...input,
        ...(start ? { ExclusiveStartKey: start } : {}),
      }),
      signal ? { abortSignal: signal } : {},
    ) as QueryCommandOutput | undefined;
    start = page?.LastEvaluatedKey;
    yield page?.Items ?? [];
  } while (start !== undefined);
}

/** Every item of a query (all pages). */
export async function queryAllItems(
  client: QueryClient,
  input: QueryCommandInput,
  signal?: AbortSignal,
): Promise<Item[]> {
  const items: Item[] = [];
  for await (const page of queryPages(client, input, signal)) {
    items.push(...page);
  }
  return items;
}

/** The table helper over a client (already wrapped with whatever transport the caller wants). */
export function createTableClient(
  client: DynamoDbClientLike,
  options: TableClientOptions,
): TableClient {
  const sdk = client as SdkClient;
  const table = options.tableName;
  const clock = options.clock;
  function send<T>(command: unknown): Promise<T> {
    return (sdk.send as (c: unknown) => Promise<T>)(command);
  }
  async function batchGet(
    keys: readonly Item[],
    consistent = true,
  ): Promise<Item[]> {
    const out: Item[] = [];
    let pending: readonly Item[] = keys;
    for (let attempt = 0; pending.length > 0; attempt++) {
      const chunk = pending.slice(0, 100);
      const rest = pending.slice(100);
      const res: BatchGetItemCommandOutput = await sdk.send(
        new BatchGetItemCommand({
          RequestItems: {
            [table]: { Keys: chunk, ConsistentRead: consistent },
          },
        }),
      );
      out.push(...(res.Responses?.[table] ?? []));
      const unprocessed = res.UnprocessedKeys?.[table]?.Keys ?? [];
      pending = [...unprocessed, ...rest];
      if (unprocessed.length > 0) {
        await clock.sleep(Math.min(1000, 25 * 2 ** Math.min(attempt, 5)));
      }
    }
    return out;
  }
  async function batchWrite(
    requests: readonly WriteRequest[],
  ): Promise<number> {
    let pending: readonly WriteRequest[] = requests;
    for (let attempt = 0; pending.length > 0; attempt++) {
      const chunk = pending.slice(0, 25);
      const rest = pending.slice(25);
      const res: BatchWriteItemCommandOutput = await sdk.send(
        new BatchWriteItemCommand({ RequestItems: { [table]: chunk } }),
      );
      const unprocessed = res.UnprocessedItems?.[table] ?? [];
      pending = [...unprocessed, ...rest];
      if (unprocessed.length > 0) {
        await clock.sleep(Math.min(2000, 50 * 2 ** Math.min(attempt, 6)));
      }
    }
    return requests.length;
  }
  async function writeItems(
    items: readonly TransactWriteItem[],
  ): Promise<void> {
    if (items.length === 1) {
      const only = items[0] as TransactWriteItem;
      if (only.Put) await sdk.send(new PutItemCommand(only.Put));
      else if (only.Update) await sdk.send(new UpdateItemCommand(only.Update));
      else if (only.Delete) await sdk.send(new DeleteItemCommand(only.Delete));
      return;
    }
    await sdk.send(
      new TransactWriteItemsCommand({ TransactItems: [...items] }),
    );
  }
  return {
    name: table,
    client: sdk,
    clock,
    send,
    batchGet,
    batchWrite,
    batchDelete(keys: readonly Item[]): Promise<number> {
      return batchWrite(keys.map((k) => ({ DeleteRequest: { Key: k } })));
    },
    queryPages(
      input: Omit<QueryCommandInput, "TableName">,
      signal?: AbortSignal,
    ): AsyncGenerator<Item[]> {
      return queryPages(sdk, { ...input, TableName: table }, signal);
    },
    queryAll(
      input: Omit<QueryCommandInput, "TableName">,
      signal?: AbortSignal,
    ): Promise<Item[]> {
      return queryAllItems(sdk, { ...input, TableName: table }, signal);
    },
    writeItems,
  };
}

const tables = new WeakMap<object, TableClient>();

/**
 * Binds a table helper to its owner (an open repository) so that
 * {@linkcode tableOf} finds it. Called by the repository's factory only.
 *
 * @internal
 */
export function bindTable(owner: object, table: TableClient): void {
  tables.set(owner, table);
}

/**
 * The table helper of an open repository: the low-level I/O (typed send,
 * batch reads and writes, paged queries) the CLI, the workers, the
 * migrations and the tests use, kept off the repository's public class.
 *
 * @throws {TypeError} when `owner` is not an open repository
 */
export function tableOf(owner: object): TableClient {
  const table = tables.get(owner);
  if (!table) {
    throw new TypeError("Cannot find the table: not an open repository");
  }
  return table;
}
