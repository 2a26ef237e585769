/**
 * Paged queries: every page of a `Query`, through the small client
 * interface the rest of the code uses (a real `DynamoDBClient` fits).
 *
 * @module
 */
import {
  type AttributeValue,
  QueryCommand,
  type QueryCommandInput,
  type QueryCommandOutput,
} from "@aws-sdk/client-dynamodb";

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
): AsyncGenerator<Record<string, AttributeValue>[]> {
  let start: Record<string, AttributeValue> | undefined;
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
): Promise<Record<string, AttributeValue>[]> {
  const items: Record<string, AttributeValue>[] = [];
  for await (const page of queryPages(client, input, signal)) {
    items.push(...page);
  }
  return items;
}
