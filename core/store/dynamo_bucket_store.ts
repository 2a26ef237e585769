/**
 * {@linkcode BucketStore} on DynamoDB: each typed write becomes the
 * conditional `UpdateItem`/`PutItem` built by `core/bucket_item.ts` (the
 * stored format of schema 0.10, shared with the Python client), several
 * become one `TransactWriteItems`. Sent through the repository's guarded
 * send (deadlines, at-most-once writes, clock sampling).
 *
 * @module
 */
import {
  PutItemCommand,
  type TransactWriteItem,
  TransactWriteItemsCommand,
  type Update,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import type {
  BucketStore,
  BucketWrite,
  EntityLink,
  ReadResult,
  TransactResult,
  WriteResult,
} from "../acquire/bucket_store.ts";
import {
  bucketKey,
  type BucketRef,
  decodeBucket,
  deltaUpdate,
  plainUpdate,
  slowPathWrite,
} from "../bucket_item.ts";
import { bool, type Item, str } from "../expr.ts";
import { pkEntity, SK } from "../keys.ts";
import { cancellationCodes, isConditionFailed } from "../_sdk_errors.ts";
import type { TableClient } from "./table.ts";

/** What the store needs of the table helper (`tableOf(repo)`). */
export type BucketTable = Pick<TableClient, "name" | "send" | "batchGet">;

/** The transaction item of one write. */
export function transactItem(table: string, w: BucketWrite): TransactWriteItem {
  switch (w.kind) {
    case "plain":
      return { Update: plainUpdate(table, w.write) as Update };
    case "slow":
      return slowPathWrite(table, w.write);
    case "debt":
      return { Update: deltaUpdate(table, w.ref, w.deltas) };
    case "shards":
      return {
        Update: {
          TableName: table,
          Key: bucketKey({ ...w.ref, shard: 0 }),
          UpdateExpression: "SET shard_count = :n",
          ConditionExpression: "shard_count = :c",
          ExpressionAttributeValues: {
            ":n": { N: String(w.to) },
            ":c": { N: String(w.from) },
          },
          ReturnValuesOnConditionCheckFailure: "ALL_OLD",
        },
      };
  }
}

function refOf(w: BucketWrite): BucketRef {
  return w.kind === "plain" || w.kind === "slow" ? w.write.ref : w.ref;
}

/** Bucket items in one DynamoDB table. */
export class DynamoBucketStore implements BucketStore {
  readonly name: string;
  readonly #table: BucketTable;

  /** A store on a table, sending through its guarded send. */
  constructor(table: BucketTable) {
    this.name = table.name;
    this.#table = table;
  }

  async read(
    refs: readonly BucketRef[],
    entity?: { readonly ns: string; readonly entityId: string },
  ): Promise<ReadResult> {
    const keys: Item[] = refs.map(bucketKey);
    const metaPk = entity ? pkEntity(entity.ns, entity.entityId) : null;
    if (metaPk) keys.push({ PK: { S: metaPk }, SK: { S: SK.META } });
    const byKey = new Map<string, Item>();
    for (const it of await this.#table.batchGet(keys, true)) {
      byKey.set(keyOf(it), it);
    }
    const items = refs.map((r) => {
      const it = byKey.get(keyOf(bucketKey(r)));
      return it ? decodeBucket(it, r.shard) : null;
    });
    let link: EntityLink | null = null;
    if (metaPk) {
      const meta = byKey.get(`${metaPk}\u0000${SK.META}`);
      link = meta
        ? {
          cascade: bool(meta, "cascade") ?? false,
          parentId: str(meta, "parent_id"),
        }
        : null;
    }
    return { items, link };
  }

  async write(
    w: BucketWrite,
    options: { readonly answer?: boolean } = {},
  ): Promise<WriteResult> {
    const ref = refOf(w);
    const tx = transactItem(this.name, w);
    try {
      if (tx.Put) {
        await this.#table.send(new PutItemCommand(tx.Put));
        return { ok: true, item: null };
      }
      const input = tx.Update as NonNullable<typeof tx.Update>;
      const out = await this.#table.send<{ Attributes?: Item }>(
        new UpdateItemCommand(
          options.answer ? { ...input, ReturnValues: "ALL_NEW" } : input,
        ),
      );
      return {
        ok: true,
        item: out.Attributes ? decodeBucket(out.Attributes, ref.shard) : null,
      };
    } catch (e) {
      if (!isConditionFailed(e)) throw e;
      const old = (e as { Item?: Item }).Item;
      return { ok: false, old: old ? decodeBucket(old, ref.shard) : null };
    }
  }

  async transact(ws: readonly BucketWrite[]): Promise<TransactResult> {
    if (ws.length === 1) {
      const r = await this.write(ws[0] as BucketWrite);
      return r.ok ? { ok: true } : { ok: false, olds: [r.old] };
    }
    try {
      await this.#table.send(
        new TransactWriteItemsCommand({
          TransactItems: ws.map((w) => transactItem(this.name, w)),
        }),
      );
      return { ok: true };
    } catch (e) {
      if (!cancellationCodes(e).includes("ConditionalCheckFailed")) throw e;
      const reasons = (e as { CancellationReasons?: { Item?: Item }[] })
        .CancellationReasons ?? [];
      return {
        ok: false,
        olds: ws.map((w, i) => {
          const old = reasons[i]?.Item;
          return old ? decodeBucket(old, refOf(w).shard) : null;
        }),
      };
    }
  }
}

function keyOf(item: Item): string {
  return `${str(item, "PK") ?? ""}\u0000${str(item, "SK") ?? ""}`;
}
