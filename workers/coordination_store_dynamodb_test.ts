import assert from "node:assert/strict";
import type { DynamoDbClientLike } from "./coordination_store_dynamodb.ts";
import { isStreamWorkerError } from "./errors.ts";

// Loading the AWS SDK reads environment variables, which plain unit runs (`--allow-read=.`) do not grant.
// These tests run with `--allow-env`; without it they are reported as ignored.
const ignore = Deno.permissions.querySync({ name: "env" }).state !== "granted";
const load = async () => ({
  ...(await import("@aws-sdk/client-dynamodb")),
  ...(await import("./coordination_store_dynamodb.ts")),
});

const ARN =
  "arn:aws:dynamodb:us-east-1:1:table/t/stream/2026-01-01T00:00:00.000";

function fakeClient(
  reply: (command: unknown) => unknown,
): DynamoDbClientLike & { sent: unknown[] } {
  const sent: unknown[] = [];
  return {
    sent,
    send(command) {
      sent.push(command);
      try {
        return Promise.resolve(reply(command));
      } catch (error) {
        return Promise.reject(error);
      }
    },
  };
}

Deno.test({
  name: "coordinationPartitionKey() puts leases under the reserved namespace",
  ignore,
}, async () => {
  const m = await load();
  assert.equal(
    m.coordinationPartitionKey("agg", ARN),
    "_/STREAM#agg#2026-01-01T00:00:00.000",
  );
});

Deno.test({
  name:
    "m.createDynamoDbCoordinationStore() lists leases with a paginated consistent Query",
  ignore,
}, async () => {
  const m = await load();
  let page = 0;
  const client = fakeClient(() =>
    page++ === 0
      ? {
        Items: [{
          SK: { S: "#SHARD#s1" },
          owner: { S: "w" },
          epoch: { N: "2" },
          counter: { N: "7" },
          checkpoint: { S: "5" },
          ended: { BOOL: false },
          start: { S: "TRIM_HORIZON" },
        }],
        LastEvaluatedKey: { PK: { S: "x" } },
      }
      : {
        Items: [{
          SK: { S: "#SHARD#s2" },
          parent_shard_id: { S: "s1" },
          epoch: { N: "0" },
          counter: { N: "0" },
          ended: { BOOL: true },
          start: { S: "LATEST" },
        }],
      }
  );
  const store = m.createDynamoDbCoordinationStore(client, {
    tableName: "t",
    consumerName: "agg",
    streamArn: ARN,
  });
  const leases = await store.listLeases();
  assert.deepEqual(leases, [
    {
      shardId: "s1",
      owner: "w",
      epoch: 2,
      counter: 7,
      checkpoint: "5",
      ended: false,
      start: "TRIM_HORIZON",
    },
    {
      shardId: "s2",
      parentShardId: "s1",
      epoch: 0,
      counter: 0,
      ended: true,
      start: "LATEST",
    },
  ]);
  const first = client.sent[0];
  assert.ok(first instanceof m.QueryCommand);
  assert.equal(first.input.ConsistentRead, true);
  assert.ok(
    client.sent[1] instanceof m.QueryCommand &&
      client.sent[1].input.ExclusiveStartKey !== undefined,
  );
});

Deno.test({
  name:
    "m.createDynamoDbCoordinationStore() fences renewals on owner and epoch",
  ignore,
}, async () => {
  const m = await load();
  const client = fakeClient(() => {
    throw new m.ConditionalCheckFailedException({
      message: "no",
      $metadata: {},
    });
  });
  const store = m.createDynamoDbCoordinationStore(client, {
    tableName: "t",
    consumerName: "agg",
    streamArn: ARN,
  });
  const r = await store.renewLease(
    { shardId: "s1", owner: "w", epoch: 3 },
    "9",
  );
  assert.deepEqual(r, { kind: "lost" });
  const cmd = client.sent[0];
  assert.ok(cmd instanceof m.UpdateItemCommand);
  assert.equal(
    cmd.input.ConditionExpression,
    "#o = :me AND #e = :e AND (attribute_not_exists(#cpk) OR #cpk < :cpk)",
  );
  assert.deepEqual(cmd.input.ExpressionAttributeValues?.[":e"], { N: "3" });
  assert.deepEqual(cmd.input.ExpressionAttributeValues?.[":cp"], { S: "9" });
  assert.deepEqual(cmd.input.ExpressionAttributeValues?.[":cpk"], {
    S: "9".padStart(40, "0"),
  });
});

Deno.test({
  name:
    "m.createDynamoDbCoordinationStore() renews without the checkpoint when a commit already wrote a later one, and names the new owner when lost",
  ignore,
}, async () => {
  const m = await load();
  const ccf = (item: Record<string, unknown>) =>
    Object.assign(
      new m.ConditionalCheckFailedException({ message: "no", $metadata: {} }),
      { Item: item },
    );
  let calls = 0;
  const client = fakeClient(() => {
    calls++;
    if (calls === 1) {
      throw ccf({
        owner: { S: "w" },
        epoch: { N: "3" },
        "checkpoint_key": { S: "12".padStart(40, "0") },
      });
    }
    return {
      Attributes: {
        SK: { S: "#SHARD#s1" },
        owner: { S: "w" },
        epoch: { N: "3" },
        counter: { N: "8" },
        checkpoint: { S: "12" },
      },
    };
  });
  const store = m.createDynamoDbCoordinationStore(client, {
    tableName: "t",
    consumerName: "agg",
    streamArn: ARN,
  });
  const r = await store.renewLease(
    { shardId: "s1", owner: "w", epoch: 3 },
    "9",
  );
  assert.equal(r.kind, "ok");
  const second = client.sent[1];
  assert.ok(second instanceof m.UpdateItemCommand);
  assert.equal(second.input.ConditionExpression, "#o = :me AND #e = :e");
  assert.equal(second.input.ExpressionAttributeValues?.[":cp"], undefined);

  const taken = fakeClient(() => {
    throw ccf({ owner: { S: "other" }, epoch: { N: "4" } });
  });
  const lost = m.createDynamoDbCoordinationStore(taken, {
    tableName: "t",
    consumerName: "agg",
    streamArn: ARN,
  });
  assert.deepEqual(
    await lost.renewLease({ shardId: "s1", owner: "w", epoch: 3 }, "9"),
    { kind: "lost", owner: "other" },
  );
  assert.equal(taken.sent.length, 1);
});

Deno.test({
  name:
    "m.createDynamoDbCoordinationStore() reports a commit whose earlier attempt landed as committed, not as a lost lease",
  ignore,
}, async () => {
  const m = await load();
  const cancelled = (item: Record<string, unknown>) =>
    new m.TransactionCanceledException({
      message: "cancelled",
      $metadata: {},
      CancellationReasons: [{ Code: "None" }, {
        Code: "ConditionalCheckFailed",
        Item: item as never,
      }],
    });
  const fence = { shardId: "s1", owner: "w", epoch: 2 };
  const effect = {
    Update: {
      TableName: "t",
      Key: { PK: { S: "a" }, SK: { S: "b" } },
      UpdateExpression: "ADD n :one",
    },
  };
  const landed = m.createDynamoDbCoordinationStore(
    fakeClient(() => {
      throw cancelled({
        owner: { S: "w" },
        epoch: { N: "2" },
        "checkpoint_key": { S: "42".padStart(40, "0") },
      });
    }),
    { tableName: "t", consumerName: "agg", streamArn: ARN },
  );
  assert.deepEqual(await landed.commit(fence, "42", [effect]), {
    kind: "committed",
    replayed: true,
  });
  const stolen = m.createDynamoDbCoordinationStore(
    fakeClient(() => {
      throw cancelled({
        owner: { S: "thief" },
        epoch: { N: "3" },
        "checkpoint_key": { S: "42".padStart(40, "0") },
      });
    }),
    { tableName: "t", consumerName: "agg", streamArn: ARN },
  );
  assert.deepEqual(await stolen.commit(fence, "42", [effect]), {
    kind: "lease_lost",
    owner: "thief",
  });
  const behind = m.createDynamoDbCoordinationStore(
    fakeClient(() => {
      throw cancelled({
        owner: { S: "w" },
        epoch: { N: "2" },
        "checkpoint_key": { S: "41".padStart(40, "0") },
      });
    }),
    { tableName: "t", consumerName: "agg", streamArn: ARN },
  );
  assert.equal((await behind.commit(fence, "42", [effect])).kind, "lease_lost");
});

Deno.test({
  name:
    "m.createDynamoDbCoordinationStore() commits effects and the fenced checkpoint in one transaction",
  ignore,
}, async () => {
  const m = await load();
  const client = fakeClient(() => ({}));
  const store = m.createDynamoDbCoordinationStore(client, {
    tableName: "t",
    consumerName: "agg",
    streamArn: ARN,
  });
  const effect = {
    Update: {
      TableName: "t",
      Key: { PK: { S: "a" }, SK: { S: "b" } },
      UpdateExpression: "ADD n :one",
    },
  };
  assert.deepEqual(
    await store.commit({ shardId: "s1", owner: "w", epoch: 1 }, "42", [effect]),
    { kind: "committed" },
  );
  const cmd = client.sent[0];
  assert.ok(cmd instanceof m.TransactWriteItemsCommand);
  const items = cmd.input.TransactItems ?? [];
  assert.equal(items.length, 2);
  assert.deepEqual(items[0], effect);
  assert.equal(
    items[1]?.Update?.ConditionExpression,
    "#o = :me AND #e = :e AND (attribute_not_exists(#cpk) OR #cpk < :cpk)",
  );
  assert.equal(
    items[1]?.Update?.ReturnValuesOnConditionCheckFailure,
    "ALL_OLD",
  );
  assert.deepEqual(items[1]?.Update?.Key, {
    PK: { S: "_/STREAM#agg#2026-01-01T00:00:00.000" },
    SK: { S: "#SHARD#s1" },
  });
  await assert.rejects(
    store.commit(
      { shardId: "s1", owner: "w", epoch: 1 },
      "43",
      Array.from({ length: 100 }, () => effect),
    ),
    RangeError,
  );
});

Deno.test({
  name:
    "m.classifyCommitError() tells a lost lease, a rejected effect and a conflict apart",
  ignore,
}, async () => {
  const m = await load();
  const cancel = (codes: string[]): Error =>
    new m.TransactionCanceledException({
      message: "cancelled",
      $metadata: {},
      CancellationReasons: codes.map((Code) => ({ Code })),
    });
  assert.deepEqual(
    m.classifyCommitError(cancel(["None", "ConditionalCheckFailed"]), 2, "s"),
    { kind: "lease_lost" },
  );
  assert.equal(
    m.classifyCommitError(cancel(["ConditionalCheckFailed", "None"]), 2, "s")
      .kind,
    "rejected",
  );
  assert.throws(
    () =>
      m.classifyCommitError(cancel(["TransactionConflict", "None"]), 2, "s"),
    (e: unknown) =>
      isStreamWorkerError(e, "COORDINATION_CONFLICT") && e.retryable,
  );
});
