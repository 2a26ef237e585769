import assert from "node:assert/strict";
import type { TransactWriteItem } from "@aws-sdk/client-dynamodb";
import { FakeStream } from "../tests/_fakes/fake_stream.ts";
import { VirtualClock } from "../tests/_fakes/virtual_clock.ts";
import {
  type BatchEnvironment,
  createMemoryDeadLetterSink,
  primaryKeyLane,
  processBatch,
  type ProcessingConfig,
  type StreamHandler,
} from "./batch_processor.ts";
import {
  createMemoryCoordinationStore,
  type MemoryCoordinationStore,
} from "./coordination_store.ts";
import { createStreamWorkerMetrics } from "./metrics.ts";
import type { StreamRecord } from "./stream_source.ts";

async function fixture(
  handler: StreamHandler,
  overrides: Partial<ProcessingConfig> = {},
  storeOptions: Parameters<typeof createMemoryCoordinationStore>[0] = {},
): Promise<{
  records: readonly StreamRecord[];
  config: ProcessingConfig;
  env: BatchEnvironment;
  store: MemoryCoordinationStore;
  sink: ReturnType<typeof createMemoryDeadLetterSink>;
  clock: VirtualClock;
}> {
  const clock = new VirtualClock();
  const stream = new FakeStream({ clock });
  stream.addShard("s0");
  for (let i = 0; i < 4; i++) stream.put("s0", { pk: `ns/ENTITY#e${i}` });
  const store = createMemoryCoordinationStore(storeOptions);
  await store.createLease({ shardId: "s0", start: "TRIM_HORIZON" });
  await store.takeLease("s0", "me", { epoch: 0, counter: 0 });
  const fence = { shardId: "s0", owner: "me", epoch: 1 };
  const sink = createMemoryDeadLetterSink();
  const config: ProcessingConfig = {
    handler,
    filters: [],
    frameworkPrefix: "_/STREAM#",
    maxAttempts: 2,
    bisectOnError: true,
    maxRecordAgeMs: 3_600_000,
    parallelism: 1,
    laneKey: primaryKeyLane,
    keyAttributes: ["PK", "SK"],
    retryBaseMs: 10,
    retryMaxMs: 100,
    deadLetterSink: sink,
    clock,
    random: () => 0,
    ...overrides,
  };
  const env: BatchEnvironment = {
    shardId: "s0",
    epoch: 1,
    stopSignal: new AbortController().signal,
    hardSignal: new AbortController().signal,
    metrics: createStreamWorkerMetrics(),
    emit: () => {},
    commit: (checkpoint, effects, signal) =>
      store.commit(fence, checkpoint, effects, signal),
  };
  return { records: stream.records("s0"), config, env, store, sink, clock };
}

function effects(record: StreamRecord, n: number): TransactWriteItem[] {
  return Array.from({ length: n }, (_, i) => ({
    Update: {
      TableName: "t",
      Key: { PK: { S: record.eventId }, SK: { S: String(i) } },
      UpdateExpression: "ADD c :one",
    },
  }));
}

Deno.test("processBatch() splits a batch whose effects exceed one transaction, each commit with its prefix checkpoint", async () => {
  const f = await fixture((records) =>
    Promise.resolve({ effects: records.flatMap((r) => effects(r, 40)) })
  );
  const outcome = await processBatch(f.records, f.config, f.env);
  assert.deepEqual(outcome, {
    kind: "done",
    checkpoint: f.records[3]?.sequenceNumber,
    committed: true,
  });
  assert.ok(f.store.committed.every((t) => t.effects.length <= 99));
  assert.equal(
    f.store.committed.reduce((n, t) => n + t.effects.length, 0),
    160,
  );
  assert.deepEqual(
    f.store.committed.map((t) => t.checkpoint),
    f.records.map((r) => r.sequenceNumber).filter((_, i) => i % 2 === 1),
  );
});

Deno.test("processBatch() splits when two effects of a batch hit the same item", async () => {
  const same: TransactWriteItem = {
    Update: {
      TableName: "t",
      Key: { PK: { S: "snap" }, SK: { S: "h1" } },
      UpdateExpression: "ADD c :one",
    },
  };
  const f = await fixture((records) =>
    Promise.resolve({ effects: records.map(() => same) })
  );
  const outcome = await processBatch(f.records, f.config, f.env);
  assert.equal(outcome.kind, "done");
  assert.equal(f.store.committed.length, 4);
  assert.ok(f.store.committed.every((t) => t.effects.length === 1));
});

Deno.test("processBatch() dead-letters a record whose effects are rejected and commits the rest", async () => {
  const f = await fixture(
    (records) =>
      Promise.resolve({ effects: records.flatMap((r) => effects(r, 1)) }),
    {},
    {
      rejectEffects: (items) =>
        items.some((e) =>
            e.Update?.Key?.["PK"]?.S === "ev-100000000000000000003"
          )
          ? "ConditionalCheckFailed"
          : undefined,
    },
  );
  const outcome = await processBatch(f.records, f.config, f.env);
  assert.equal(outcome.kind, "done");
  assert.deepEqual(f.sink.letters.map((l) => [l.record.eventId, l.reason]), [[
    "ev-100000000000000000003",
    "effects_rejected",
  ]]);
  assert.equal(f.store.committed.reduce((n, t) => n + t.effects.length, 0), 3);
  assert.equal(f.store.lease("s0")?.checkpoint, f.records[3]?.sequenceNumber);
});

Deno.test("processBatch() sends a non-retryable failure to the sink at once", async () => {
  let calls = 0;
  const f = await fixture((records) => {
    calls++;
    if (
      records.length === 1 && records[0]?.eventId === "ev-100000000000000000001"
    ) {
      return Promise.reject(
        Object.assign(new Error("invalid"), { retryable: false }),
      );
    }
    return records.length > 1 &&
        records.some((r) => r.eventId === "ev-100000000000000000001")
      ? Promise.reject(new Error("batch failed"))
      : Promise.resolve();
  });
  const outcome = await processBatch(f.records, f.config, f.env);
  assert.equal(outcome.kind, "done");
  assert.deepEqual(f.sink.letters.map((l) => [l.reason, l.attempts]), [[
    "non_retryable",
    1,
  ]]);
  assert.equal(calls, 5); // 4 → 2 → 1 (fails once) + 1 + the other half
});

Deno.test("processBatch() dead-letters records older than maxRecordAgeMs without calling the handler", async () => {
  let called = 0;
  const f = await fixture(() => {
    called++;
    return Promise.resolve();
  }, { maxRecordAgeMs: 60_000 });
  await f.clock.advance(120_000);
  const outcome = await processBatch(f.records, f.config, f.env);
  assert.equal(outcome.kind, "done");
  assert.equal(called, 0);
  assert.equal(f.sink.letters.length, 4);
  assert.ok(f.sink.letters.every((l) => l.reason === "max_record_age"));
});

Deno.test("processBatch() defers the checkpoint when filters leave nothing to handle", async () => {
  const f = await fixture(() => Promise.reject(new Error("not called")), {
    filters: [(r) => r.eventName === "REMOVE"],
  });
  const outcome = await processBatch(f.records, f.config, f.env);
  assert.deepEqual(outcome, {
    kind: "done",
    checkpoint: f.records[3]?.sequenceNumber,
    committed: false,
  });
  assert.equal(f.store.committed.length, 0);
  assert.equal(f.env.metrics.recordsFiltered, 4);
});

Deno.test("processBatch() abandons retries on shutdown without committing", async () => {
  const stop = new AbortController();
  const f = await fixture(() => Promise.reject(new Error("down")), {
    bisectOnError: false,
    maxAttempts: 5,
    random: () => 0.5,
  });
  const env = { ...f.env, stopSignal: stop.signal };
  const pending = processBatch(f.records, f.config, env);
  await f.clock.advance(1);
  stop.abort();
  assert.deepEqual(await pending, { kind: "abandoned" });
  assert.equal(f.store.committed.length, 0);
  assert.equal(f.sink.letters.length, 0);
});

Deno.test("processBatch() reports a lost lease instead of committing", async () => {
  const f = await fixture(() => Promise.resolve({ effects: [] }));
  await f.store.takeLease("s0", "thief", { epoch: 1, counter: 1 });
  assert.deepEqual(await processBatch(f.records, f.config, f.env), {
    kind: "lease_lost",
    owner: "thief",
  });
  assert.equal(f.store.committed.length, 0);
});

Deno.test("processBatch() dead-letters the records a handler rejects (invalid_record, with the reason) and commits the others' effects", async () => {
  const f = await fixture((records) =>
    Promise.resolve({
      effects: records.slice(1).flatMap((r) => effects(r, 1)),
      rejected: records[0] === undefined
        ? []
        : [{ record: records[0], reason: 'attribute "b_rpm_tc" is a map' }],
    })
  );
  const seen: unknown[] = [];
  const outcome = await processBatch(f.records, f.config, {
    ...f.env,
    emit: (e) => seen.push(e),
  });
  assert.equal(outcome.kind, "done");
  assert.deepEqual(
    f.sink.letters.map((
      l,
    ) => [l.record, l.reason, l.error.name, l.error.message]),
    [[
      f.records[0],
      "invalid_record",
      "InvalidRecordError",
      'attribute "b_rpm_tc" is a map',
    ]],
  );
  assert.equal(f.store.committed.length, 1);
  assert.equal(f.store.committed[0]?.effects.length, 3);
  assert.deepEqual(seen.map((e) => (e as { key?: unknown }).key), [{
    PK: "ns/ENTITY#e0",
    SK: "#STATE",
  }]);
});

Deno.test("processBatch() retries a dead-letter write that gets no answer before committing past the record", async () => {
  let attempts = 0;
  const f = await fixture(() =>
    Promise.reject(Object.assign(new Error("bad"), { retryable: false }))
  );
  const inner = f.sink;
  const config = {
    ...f.config,
    bisectOnError: false,
    deadLetterSink: {
      send: (letters: Parameters<typeof inner.send>[0]) => {
        if (++attempts <= 2) {
          return Promise.reject(
            Object.assign(new Error("socket hang up"), { code: "ECONNRESET" }),
          );
        }
        return inner.send(letters);
      },
    },
  };
  const pending = processBatch(f.records, config, f.env);
  await f.clock.runUntil(() => f.store.committed.length === 1);
  assert.equal((await pending).kind, "done");
  assert.equal(attempts, 3);
  assert.equal(f.sink.letters.length, 4);
  assert.equal(f.env.metrics.commitRetries, 2);
});
