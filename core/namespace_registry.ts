/**
 * The namespace registry's two records under `_/SYSTEM#` (spec 01 §4.6):
 * lookup and registration without an open repository, so tools that must
 * not initialise a table (the namespace-keys migration) share the exact
 * write the library does.
 *
 * @module
 */
import {
  GetItemCommand,
  TransactWriteItemsCommand,
} from "@aws-sdk/client-dynamodb";
import type { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { cancellationCodes, isTransactionConflictOnly } from "./_sdk_errors.ts";
import { exponentialBackoff } from "./_backoff.ts";
import { type Clock, isoSeconds } from "./clock.ts";
import { NamespaceStateError } from "./errors.ts";
import { type Item, str } from "./expr.ts";
import { pkSystem, RESERVED_NAMESPACE, skNamespace, skNsid } from "./keys.ts";
import { validateNamespaceName } from "./validation.ts";

/** Where the registry lives and how to reach it. */
export interface RegistryTarget {
  /** The SDK client's `send`. */
  readonly client: Pick<DynamoDBClient, "send">;
  /** Table name. */
  readonly table: string;
  /** Clock for `created_at` and backoff. */
  readonly clock: Clock;
  /** Aborts the calls. */
  readonly signal?: AbortSignal;
}

const SYSTEM_PK = pkSystem(RESERVED_NAMESPACE);

/** A fresh opaque id: URL-safe base64 of 8 random bytes, never starting with `-`. */
export function randomNamespaceId(): string {
  for (;;) {
    const bytes = crypto.getRandomValues(new Uint8Array(8));
    const b64 = btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(
      /\//g,
      "_",
    ).replace(/=+$/, "");
    if (!b64.startsWith("-")) return b64;
  }
}

/** The forward record (`#NAMESPACE#{name}`) when it is active, or `null`. Never writes. */
export async function getActiveNamespaceRecord(
  target: RegistryTarget,
  name: string,
): Promise<Item | null> {
  const out = await target.client.send(
    new GetItemCommand({
      TableName: target.table,
      Key: { PK: { S: SYSTEM_PK }, SK: { S: skNamespace(name) } },
      ConsistentRead: true,
    }),
    target.signal ? { abortSignal: target.signal } : {},
  );
  return out.Item && str(out.Item, "status") === "active" ? out.Item : null;
}

/**
 * Registers a namespace name (both records in one transaction, each
 * conditional) and returns its id; a name already registered returns the
 * existing id. Transaction conflicts are retried with backoff.
 *
 * @throws {ValidationError} for `_` or a malformed name
 * @throws {NamespaceStateError} after repeated concurrent attempts
 */
export async function registerNamespaceRecords(
  target: RegistryTarget,
  name: string,
): Promise<string> {
  validateNamespaceName(name);
  for (let attempt = 0; attempt < 5; attempt++) {
    const id = randomNamespaceId();
    const common: Item = {
      "namespace_id": { S: id },
      "namespace_name": { S: name },
      status: { S: "active" },
      "created_at": { S: isoSeconds(target.clock.now()) },
      GSI4PK: { S: RESERVED_NAMESPACE },
      GSI4SK: { S: SYSTEM_PK },
    };
    const put = (sk: string) => ({
      Put: {
        TableName: target.table,
        Item: { PK: { S: SYSTEM_PK }, SK: { S: sk }, ...common },
        ConditionExpression: "attribute_not_exists(PK)",
      },
    });
    try {
      await target.client.send(
        new TransactWriteItemsCommand({
          TransactItems: [put(skNamespace(name)), put(skNsid(id))],
        }),
        target.signal ? { abortSignal: target.signal } : {},
      );
      return id;
    } catch (e) {
      const codes = cancellationCodes(e);
      if (codes[0] === "ConditionalCheckFailed") {
        const existing = await getActiveNamespaceRecord(target, name);
        const existingId = existing ? str(existing, "namespace_id") : null;
        if (existingId) return existingId;
        continue; // a deleted name's forward record was being replaced: try again
      }
      if (isTransactionConflictOnly(e)) {
        await target.clock.sleep(
          exponentialBackoff(attempt, 25, Infinity),
          target.signal,
        );
        continue;
      }
      if (codes[1] === "ConditionalCheckFailed") continue; // id collision: draw another
      throw e;
    }
  }
  throw new NamespaceStateError(
    `Cannot register namespace "${name}": too many concurrent attempts`,
    {
      namespaceName: name,
    },
  );
}
