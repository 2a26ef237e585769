/**
 * Proves the fault-injection toolkit (`_faults.ts`) against DynamoDB Local and
 * documents what the AWS SDK does under each fault: which are retried, how
 * errors look, and that a write failed after it applied is applied again by
 * the SDK's own retry (the double apply the limiter must defend against).
 */
import assert from "node:assert/strict";
import {
  CreateTableCommand,
  DeleteTableCommand,
  type DynamoDBClient,
  GetItemCommand,
  InternalServerError,
  ListTablesCommand,
  ProvisionedThroughputExceededException,
  PutItemCommand,
  ThrottlingException,
  TransactionCanceledException,
  TransactionConflictException,
  TransactWriteItemsCommand,
  UpdateItemCommand,
  type UpdateItemCommandOutput,
} from "@aws-sdk/client-dynamodb";
import {
  faultyClient,
  type FaultyClientOptions,
  silentEndpoint,
  skewedClock,
} from "./_faults.ts";
import { localClient, stopLocal, tableName } from "./_harness.ts";

/** A one-key table (`pk` S) and an unfaulty client to inspect it; dispose deletes it. */
async function tinyTable(): Promise<
  { name: string; admin: DynamoDBClient } & AsyncDisposable
> {
  const { client: admin } = await localClient();
  const name = tableName("faults");
  await admin.send(
    new CreateTableCommand({
      TableName: name,
      KeySchema: [{ AttributeName: "pk", KeyType: "HASH" }],
      AttributeDefinitions: [{ AttributeName: "pk", AttributeType: "S" }],
      BillingMode: "PAY_PER_REQUEST",
    }),
  );
  return {
    name,
    admin,
    async [Symbol.asyncDispose]() {
      await admin.send(new DeleteTableCommand({ TableName: name })).catch(
        () => {},
      );
      admin.destroy();
    },
  };
}

/** `ADD n :1` on item `pk`. */
function increment(
  client: DynamoDBClient,
  table: string,
  pk: string,
  abortSignal?: AbortSignal,
): Promise<UpdateItemCommandOutput> {
  return client.send(
    new UpdateItemCommand({
      TableName: table,
      Key: { pk: { S: pk } },
      UpdateExpression: "ADD n :one",
      ExpressionAttributeValues: { ":one": { N: "1" } },
      ReturnValues: "UPDATED_NEW",
    }),
    abortSignal ? { abortSignal } : {},
  );
}

/** The counter `n` of item `pk` (consistent read), or undefined. */
async function counter(
  admin: DynamoDBClient,
  table: string,
  pk: string,
): Promise<number | undefined> {
  const out = await admin.send(
    new GetItemCommand({
      TableName: table,
      Key: { pk: { S: pk } },
      ConsistentRead: true,
    }),
  );
  const n = out.Item?.n?.N;
  return n === undefined ? undefined : Number(n);
}

function keyIs(pk: string): (input: Record<string, unknown>) => boolean {
  return (input) =>
    (input.Key as { pk?: { S?: string } } | undefined)?.pk?.S === pk;
}

/** Reads `.name`, `.code`, `$metadata` of a caught error. */
function sdkError(e: unknown): {
  name: string;
  code?: string;
  message: string;
  $fault?: string;
  $metadata?: {
    httpStatusCode?: number;
    attempts?: number;
    totalRetryDelay?: number;
  };
} {
  return e as ReturnType<typeof sdkError>;
}

async function caught(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error("expected a rejection");
}

async function withFaulty<T>(
  options: FaultyClientOptions,
  fn: (fc: Awaited<ReturnType<typeof faultyClient>>) => Promise<T>,
): Promise<T> {
  using fc = await faultyClient(options);
  return await fn(fc);
}

Deno.test("the injector sits inside the retry loop and sees each attempt once", async () => {
  await using t = await tinyTable();
  await withFaulty({}, async ({ client, faults, calls }) => {
    const stack = client.middlewareStack.identify();
    const retry = stack.indexOf("retryMiddleware - finalizeRequest");
    const injector = stack.indexOf("zaelFaultInjector - deserialize");
    assert.ok(retry >= 0 && injector > retry, stack.join("\n"));
    assert.equal(stack.at(-1), "zaelFaultInjector - deserialize");

    faults.inject({
      command: "UpdateItem",
      times: 2,
      fault: { kind: "beforeApply", error: "InternalServerError" },
    });
    const out = await increment(client, t.name, "a");
    // Default maxAttempts 3: two injected 500s, then the real write.
    assert.equal(out.$metadata.attempts, 3);
    assert.equal(out.Attributes?.n?.N, "1");
    assert.equal(calls.commands.get("UpdateItem"), 1);
    assert.equal(calls.attempts.get("UpdateItem"), 3);
    assert.deepEqual(faults.log.map((r) => r.attempt), [1, 2]);
    assert.equal(await counter(t.admin, t.name, "a"), 1);
  });
});

Deno.test("beforeApply: the SDK gets the real exception and the item is unchanged", async () => {
  await using t = await tinyTable();
  await withFaulty({}, async ({ client, faults, calls }) => {
    await increment(client, t.name, "a");
    faults.inject({
      command: "UpdateItemCommand",
      fault: { kind: "beforeApply", error: "InternalServerError" },
    });
    const e = await caught(increment(client, t.name, "a"));
    assert.ok(e instanceof InternalServerError);
    const err = sdkError(e);
    assert.equal(err.$fault, "server");
    assert.equal(err.$metadata?.httpStatusCode, 500);
    assert.equal(err.$metadata?.attempts, 3);
    assert.equal(calls.attempts.get("UpdateItem"), 4);
    assert.equal(faults.log.length, 3);
    assert.ok(faults.log.every((r) => !r.sent && !r.applied));
    assert.ok(faults.log.every((r) => r.outcome === "failed"));
    assert.equal(await counter(t.admin, t.name, "a"), 1);

    // A reset connection before the request is sent: retried like the real one.
    faults.clear();
    faults.inject({
      times: 1,
      fault: { kind: "beforeApply", error: "ECONNRESET" },
    });
    const out = await increment(client, t.name, "a");
    assert.equal(out.$metadata.attempts, 2);
    assert.equal(await counter(t.admin, t.name, "a"), 2);
  });
});

Deno.test("afterApply: the write applies once per attempt, so the SDK's retry applies it twice", async () => {
  await using t = await tinyTable();
  await withFaulty({ maxAttempts: 3 }, async ({ client, faults }) => {
    faults.inject({
      command: "UpdateItem",
      times: 1,
      fault: { kind: "afterApply", error: "InternalServerError" },
    });
    const out = await increment(client, t.name, "a");
    // The caller sees one successful call, and n = 2: the double apply.
    assert.equal(out.$metadata.attempts, 2);
    assert.equal(out.Attributes?.n?.N, "2");
    assert.equal(await counter(t.admin, t.name, "a"), 2);
    assert.equal(faults.log.length, 1);
    assert.equal(faults.log[0]?.sent, true);
    assert.equal(faults.log[0]?.applied, true);
    assert.equal(faults.log[0]?.status, 200);

    // Every attempt fails after applying: the caller sees an error, n moved by 3.
    faults.inject({
      command: "UpdateItem",
      fault: { kind: "afterApply", error: "ECONNRESET" },
    });
    const e = sdkError(await caught(increment(client, t.name, "b")));
    assert.equal(e.name, "TimeoutError");
    assert.equal(e.code, "ECONNRESET");
    assert.equal(e.$metadata?.attempts, 3);
    assert.equal(await counter(t.admin, t.name, "b"), 3);
    const applied = faults.log.filter((r) => r.applied).length;
    assert.equal(applied, 1 + 3);
  });
});

Deno.test("afterApply of a write DynamoDB refused is logged as not applied", async () => {
  await using t = await tinyTable();
  await withFaulty({ maxAttempts: 1 }, async ({ client, faults }) => {
    faults.inject({
      command: "PutItem",
      fault: { kind: "afterApply", error: "InternalServerError" },
    });
    await t.admin.send(
      new PutItemCommand({ TableName: t.name, Item: { pk: { S: "a" } } }),
    );
    const e = await caught(client.send(
      new PutItemCommand({
        TableName: t.name,
        Item: { pk: { S: "a" }, n: { N: "7" } },
        ConditionExpression: "attribute_not_exists(pk)",
      }),
    ));
    assert.ok(e instanceof InternalServerError);
    assert.equal(faults.log[0]?.sent, true);
    assert.equal(faults.log[0]?.status, 400);
    assert.equal(faults.log[0]?.applied, false);
    assert.equal(await counter(t.admin, t.name, "a"), undefined);
  });
});

Deno.test("throttling is retried by the SDK (with a ~1 s backoff base); transaction conflicts are not", async () => {
  await using t = await tinyTable();
  await withFaulty({}, async ({ client, faults, calls }) => {
    faults.inject({
      command: "UpdateItem",
      times: 1,
      fault: {
        kind: "beforeApply",
        error: "ProvisionedThroughputExceededException",
      },
    });
    faults.inject({
      command: "UpdateItem",
      times: 1,
      fault: { kind: "beforeApply", error: "ThrottlingException" },
    });
    const out = await increment(client, t.name, "a");
    assert.equal(out.$metadata.attempts, 3);
    assert.deepEqual(faults.log.map((r) => r.error), [
      "ProvisionedThroughputExceededException",
      "ThrottlingException",
    ]);
    assert.equal(await counter(t.admin, t.name, "a"), 1);

    faults.inject({
      command: "UpdateItem",
      times: 1,
      fault: { kind: "beforeApply", error: "TransactionConflictException" },
    });
    calls.reset();
    const e = await caught(increment(client, t.name, "a"));
    assert.ok(e instanceof TransactionConflictException);
    assert.equal(sdkError(e).$metadata?.attempts, 1);
    assert.equal(sdkError(e).$metadata?.httpStatusCode, 400);
    assert.equal(calls.attempts.get("UpdateItem"), 1);

    faults.inject({
      command: "TransactWriteItems",
      times: 1,
      fault: { kind: "beforeApply", error: "TransactionCanceledException" },
    });
    const tx = await caught(client.send(
      new TransactWriteItemsCommand({
        TransactItems: ["a", "b"].map((pk) => ({
          Update: {
            TableName: t.name,
            Key: { pk: { S: pk } },
            UpdateExpression: "ADD n :one",
            ExpressionAttributeValues: { ":one": { N: "1" } },
          },
        })),
      }),
    ));
    assert.ok(tx instanceof TransactionCanceledException);
    assert.deepEqual(tx.CancellationReasons?.map((r) => r.Code), [
      "TransactionConflict",
      "None",
    ]);
    assert.equal(tx.$metadata.attempts, 1);
    assert.equal(await counter(t.admin, t.name, "a"), 1);
    assert.equal(await counter(t.admin, t.name, "b"), undefined);
  });
});

Deno.test("throttling on every attempt surfaces the throttling exception after maxAttempts", async () => {
  await using t = await tinyTable();
  await withFaulty({ maxAttempts: 2 }, async ({ client, faults }) => {
    faults.inject({
      command: "UpdateItem",
      fault: { kind: "beforeApply", error: "ThrottlingException" },
    });
    const e = await caught(increment(client, t.name, "a"));
    assert.ok(e instanceof ThrottlingException);
    assert.equal(sdkError(e).$metadata?.attempts, 2);
    assert.equal(faults.log.length, 2);
    assert.equal(await counter(t.admin, t.name, "a"), undefined);
  });
});

Deno.test("a predicate on the input picks the item; other commands pass", async () => {
  await using t = await tinyTable();
  await withFaulty({ maxAttempts: 1 }, async ({ client, faults }) => {
    faults.inject({
      command: "UpdateItem",
      match: keyIs("b"),
      fault: {
        kind: "beforeApply",
        error: "ProvisionedThroughputExceededException",
      },
    });
    await increment(client, t.name, "a");
    const e = await caught(increment(client, t.name, "b"));
    assert.ok(e instanceof ProvisionedThroughputExceededException);
    await client.send(new ListTablesCommand({}));
    assert.equal(await counter(t.admin, t.name, "a"), 1);
    assert.equal(await counter(t.admin, t.name, "b"), undefined);
    assert.deepEqual(faults.log.map((r) => r.command), ["UpdateItem"]);
  });
});

Deno.test("probability draws from a seeded RNG: same seed, same faults", async () => {
  await using t = await tinyTable();
  const pattern = (seed: number) =>
    withFaulty({ maxAttempts: 1, seed }, async ({ client, faults }) => {
      const rule = faults.inject({
        command: "GetItem",
        probability: 0.5,
        fault: { kind: "beforeApply", error: "InternalServerError" },
      });
      const hits: boolean[] = [];
      for (let i = 0; i < 16; i++) {
        const ok = await client.send(
          new GetItemCommand({ TableName: t.name, Key: { pk: { S: "x" } } }),
        ).then(() => true, () => false);
        hits.push(!ok);
      }
      assert.equal(rule.fired, hits.filter(Boolean).length);
      return hits;
    });
  const first = await pattern(42);
  assert.deepEqual(await pattern(42), first);
  assert.ok(first.includes(true) && first.includes(false), String(first));
});

Deno.test("delay holds the answer (applied) or the request (aborted before sending: not applied)", async () => {
  await using t = await tinyTable();
  await withFaulty({}, async ({ client, faults }) => {
    faults.inject({
      command: "UpdateItem",
      times: 1,
      fault: { kind: "delay", ms: 150 },
    });
    const t0 = performance.now();
    const out = await increment(client, t.name, "a");
    assert.ok(performance.now() - t0 >= 145);
    assert.equal(out.Attributes?.n?.N, "1"); // the held (buffered) answer still parses
    assert.equal(faults.log[0]?.outcome, "delivered");
    assert.equal(faults.log[0]?.applied, true);

    faults.inject({
      command: "UpdateItem",
      times: 1,
      fault: { kind: "delay", ms: 5_000, phase: "request" },
    });
    const e = sdkError(
      await caught(increment(client, t.name, "a", AbortSignal.timeout(50))),
    );
    assert.equal(e.name, "AbortError");
    assert.equal(faults.log[1]?.outcome, "aborted");
    assert.equal(faults.log[1]?.sent, false);
    assert.equal(await counter(t.admin, t.name, "a"), 1);
  });
});

Deno.test("an abort ends a hung call within 100 ms; a hung answer may still have applied", async () => {
  await using t = await tinyTable();
  await withFaulty({}, async ({ client, faults, calls }) => {
    for (const phase of ["request", "response"] as const) {
      faults.inject({
        command: "UpdateItem",
        times: 1,
        fault: { kind: "hang", phase },
      });
      const ac = new AbortController();
      const call = caught(increment(client, t.name, phase, ac.signal));
      await new Promise((r) => setTimeout(r, 200));
      const abortedAt = performance.now();
      ac.abort();
      const e = sdkError(await call);
      const lag = performance.now() - abortedAt;
      assert.ok(lag < 100, `rejected ${lag} ms after the abort`);
      assert.equal(e.name, "AbortError");
      assert.equal(e.message, "Request aborted");
    }
    assert.equal(calls.attempts.get("UpdateItem"), 2); // AbortError is never retried
    assert.deepEqual(
      faults.log.map((r) => [r.outcome, r.sent, r.applied]),
      [["aborted", false, false], ["aborted", true, true]],
    );
    assert.equal(await counter(t.admin, t.name, "request"), undefined);
    assert.equal(await counter(t.admin, t.name, "response"), 1);
  });
});

Deno.test("requestTimeout ends a hang with a TimeoutError the SDK retries (a late answer applies twice)", async () => {
  await using t = await tinyTable();
  await withFaulty({ requestTimeout: 200 }, async ({ client, faults }) => {
    faults.inject({
      command: "UpdateItem",
      times: 1,
      fault: { kind: "hang", phase: "response" },
    });
    const t0 = performance.now();
    const out = await increment(client, t.name, "a");
    assert.ok(performance.now() - t0 >= 195);
    assert.equal(out.$metadata.attempts, 2);
    assert.equal(faults.log[0]?.outcome, "timedOut");
    assert.equal(await counter(t.admin, t.name, "a"), 2);

    faults.inject({
      command: "UpdateItem",
      fault: { kind: "hang", phase: "request" },
    });
    const e = sdkError(await caught(increment(client, t.name, "b")));
    assert.equal(e.name, "TimeoutError");
    assert.equal(e.code, "ETIMEDOUT");
    assert.equal(e.$metadata?.attempts, 3);
    assert.equal(await counter(t.admin, t.name, "b"), undefined);
  });
});

Deno.test("dispose releases attempts still hanging", async () => {
  await using t = await tinyTable();
  const fc = await faultyClient();
  fc.faults.inject({ fault: { kind: "hang", phase: "request" } });
  const call = caught(increment(fc.client, t.name, "a"));
  await new Promise((r) => setTimeout(r, 50));
  fc[Symbol.dispose]();
  const e = sdkError(await call);
  assert.equal(e.name, "AbortError");
  assert.equal(fc.faults.log[0]?.outcome, "released");
  assert.equal(fc.calls.attempts.get("UpdateItem"), 1);
});

Deno.test("silent endpoint: an aborted call rejects promptly; without a signal it waits until the server goes", async () => {
  await using hole = silentEndpoint();
  await withFaulty(
    { endpoint: hole.endpoint },
    async ({ client, calls }) => {
      const ac = new AbortController();
      const call = caught(
        client.send(new ListTablesCommand({}), { abortSignal: ac.signal }),
      );
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(hole.connections, 1);
      const abortedAt = performance.now();
      ac.abort();
      const e = sdkError(await call);
      const lag = performance.now() - abortedAt;
      assert.ok(lag < 100, `rejected ${lag} ms after the abort`);
      assert.equal(e.name, "AbortError");
      assert.equal(calls.attempts.get("ListTables"), 1);

      // No signal, no requestTimeout: nothing ends the wait (bounded here to 500 ms).
      let settled = false;
      const waiting = caught(client.send(new ListTablesCommand({}))).finally(
        () => settled = true,
      );
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(settled, false);
      // Closing the server resets the connection; the SDK's retries are refused.
      await hole.close();
      const gone = sdkError(await waiting);
      assert.ok(
        gone.code === "ECONNRESET" || gone.code === "ECONNREFUSED",
        `${gone.name} ${gone.code} ${gone.message}`,
      );
      assert.equal(gone.$metadata?.attempts, 3);
    },
  );
});

Deno.test("silent endpoint with requestTimeout: each attempt times out and is retried", async () => {
  await using hole = silentEndpoint();
  await withFaulty(
    { endpoint: hole.endpoint, requestTimeout: 150, maxAttempts: 2 },
    async ({ client }) => {
      const t0 = performance.now();
      const e = sdkError(await caught(client.send(new ListTablesCommand({}))));
      const took = performance.now() - t0;
      assert.equal(e.name, "TimeoutError");
      assert.equal(e.code, "ETIMEDOUT");
      assert.equal(e.$metadata?.attempts, 2);
      assert.ok(took >= 295 && took < 2_000, `took ${took} ms`);
      assert.equal(hole.connections, 2);
    },
  );
});

Deno.test("skewedClock runs on the real clock shifted by the offset", async () => {
  const clock = skewedClock(-90_000);
  assert.ok(Math.abs(clock.now() - (Date.now() - 90_000)) < 50);
  const t0 = clock.now();
  await clock.sleep(30);
  assert.ok(clock.now() - t0 >= 25);
  clock.offsetMs = 5_000;
  assert.ok(Math.abs(clock.now() - (Date.now() + 5_000)) < 50);
  await assert.rejects(
    clock.sleep(10_000, AbortSignal.abort(new Error("stop"))),
    /stop/,
  );
});

Deno.test("stop DynamoDB Local", async () => {
  await stopLocal();
});
