import assert from "node:assert/strict";
import {
  committedEventIds,
  crashableStore,
  createWorld,
  recordingHandler,
  startWorker,
} from "../tests/_fakes/stream_world.ts";
import {
  COORDINATION_PK_PREFIX,
  type CoordinationStore,
} from "./coordination_store.ts";

function putMany(
  world: ReturnType<typeof createWorld>,
  shardId: string,
  n: number,
  prefix = "ns/ENTITY#",
): void {
  for (let i = 0; i < n; i++) {
    world.stream.put(shardId, { pk: `${prefix}${shardId}-${i}` });
  }
}

Deno.test("runStreamWorker() processes a parent shard fully before its children across a split", async () => {
  const world = createWorld({ describePageSize: 1, pageSize: 2 });
  world.stream.addShard("s0");
  world.stream.addShard("r0");
  putMany(world, "s0", 5);
  putMany(world, "r0", 3);
  world.stream.split("s0", ["s1", "s2"]);
  putMany(world, "s1", 3);
  putMany(world, "s2", 3);
  const a = startWorker(world, "a", { batchSize: 2 });
  const b = startWorker(world, "b", { batchSize: 2 });

  await world.clock.runUntil(() => world.handled.length >= 14);
  assert.deepEqual((await a.stop()).ok, true);
  assert.deepEqual((await b.stop()).ok, true);

  const ids = world.handled.map((h) => h.record.eventId);
  assert.equal(new Set(ids).size, 14, "no record handled twice");
  const lastParent = Math.max(
    ...world.stream.records("s0").map((r) => ids.indexOf(r.eventId)),
  );
  for (const child of ["s1", "s2"]) {
    for (const r of world.stream.records(child)) {
      assert.ok(ids.indexOf(r.eventId) > lastParent, `${child} after s0`);
    }
  }
  for (const shard of ["s0", "s1", "s2", "r0"]) {
    const seqs = world.handled.filter((h) =>
      world.stream.records(shard).includes(h.record)
    ).map((h) => h.record.sequenceNumber);
    assert.deepEqual(
      seqs,
      world.stream.records(shard).map((r) => r.sequenceNumber),
      `${shard} in order`,
    );
  }
  assert.equal(world.store.lease("s0")?.ended, true);
  assert.deepEqual(committedEventIds(world.store).sort(), [...ids].sort());
});

Deno.test("runStreamWorker() resumes from the checkpoint after its store became unreachable mid-batch, without double effects; the cut-off worker keeps running", async () => {
  const world = createWorld();
  world.stream.addShard("s0");
  putMany(world, "s0", 6);
  const crashable = crashableStore(world.store);
  let batches = 0;
  const a = startWorker(world, "a", {
    store: crashable.store,
    batchSize: 2,
    handler: recordingHandler(world, "a", (records) => {
      if (++batches === 2) crashable.crash(); // cut off after handling, before the commit lands
      return Promise.resolve({
        effects: records.map((r) => ({
          Put: {
            TableName: "t",
            Item: { PK: { S: "fx" }, SK: { S: r.eventId } },
          },
        })),
      });
    }),
  });
  await world.clock.runUntil(() =>
    a.events.some((e) => e.kind === "lease_expired")
  );
  assert.equal(a.finished(), false, "an unreachable store never ends it");
  assert.equal(
    committedEventIds(world.store).length,
    2,
    "only the first batch was committed",
  );
  assert.ok(a.metrics.commitRetries >= 1, "the commit was retried");

  const startedAt = world.clock.now();
  const b = startWorker(world, "b", { batchSize: 2 });
  await world.clock.runUntil(() => committedEventIds(world.store).length === 6);
  assert.ok(
    world.clock.now() - startedAt >= 10_000,
    "the cut-off owner's lease had to expire first",
  );
  // A takeover after a crash is not a rebalance, and the victim's expiry is not a takeover.
  const taken = b.events.find((e) => e.kind === "lease_taken");
  assert.deepEqual(
    taken?.kind === "lease_taken" ? [taken.reason, taken.from] : [],
    ["expired", "a"],
  );
  assert.equal(b.metrics.leasesStolen, 0);
  assert.equal(a.metrics.leasesLost, 0);
  assert.equal(a.metrics.leasesExpired, 1);
  assert.equal((await b.stop()).ok, true);
  assert.equal((await a.stop()).ok, true);

  const all = world.stream.records("s0").map((r) => r.eventId);
  assert.deepEqual(
    committedEventIds(world.store),
    all,
    "every effect exactly once, in order",
  );
  assert.ok(
    world.handled.length > 6,
    "the uncommitted batch was delivered again",
  );
  assert.equal(
    world.store.lease("s0")?.checkpoint,
    world.stream.records("s0")[5]?.sequenceNumber,
  );
});

Deno.test("runStreamWorker() bisects a poison record into the dead-letter sink and moves on", async () => {
  const world = createWorld();
  world.stream.addShard("s0");
  putMany(world, "s0", 8);
  const poison = world.stream.records("s0")[5];
  assert.ok(poison);
  const w = startWorker(world, "a", {
    batchSize: 8,
    maxAttempts: 3,
    handler: recordingHandler(world, "a", (records) => {
      if (records.some((r) => r.eventId === poison.eventId)) {
        return Promise.reject(new Error("bad record"));
      }
      return Promise.resolve({
        effects: records.map((r) => ({
          Put: {
            TableName: "t",
            Item: { PK: { S: "fx" }, SK: { S: r.eventId } },
          },
        })),
      });
    }),
  });
  await world.clock.runUntil(() =>
    world.sink.letters.length === 1 &&
    committedEventIds(world.store).length === 7
  );
  putMany(world, "s0", 2, "ns/LATER#");
  await world.clock.runUntil(() => committedEventIds(world.store).length === 9);
  assert.equal((await w.stop()).ok, true);

  const [letter] = world.sink.letters;
  assert.equal(letter?.record.eventId, poison.eventId);
  assert.equal(letter?.reason, "retries_exhausted");
  assert.equal(letter?.attempts, 3);
  assert.equal(letter?.error.message, "bad record");
  assert.ok(!committedEventIds(world.store).includes(poison.eventId));
  assert.equal(new Set(committedEventIds(world.store)).size, 9);
  assert.ok(w.metrics.bisects >= 3);
  assert.equal(w.metrics.deadLetters, 1);
  assert.ok(
    w.events.some((e) =>
      e.kind === "dead_letter" && e.sequenceNumber === poison.sequenceNumber
    ),
  );
});

Deno.test("runStreamWorker() balances shards across two workers and one takes over all when the other stops", async () => {
  const world = createWorld();
  for (const s of ["s0", "s1", "s2", "s3"]) {
    world.stream.addShard(s);
    putMany(world, s, 2);
  }
  const a = startWorker(world, "a");
  await world.clock.runUntil(() => a.metrics.leasesHeld === 4);
  const b = startWorker(world, "b");
  await world.clock.runUntil(() =>
    a.metrics.leasesHeld === 2 && b.metrics.leasesHeld === 2
  );
  assert.ok(b.metrics.leasesStolen >= 2);

  const stoppedAt = world.clock.now();
  assert.equal((await b.stop()).ok, true);
  assert.equal(b.metrics.leasesReleased, 2);
  await world.clock.runUntil(() => a.metrics.leasesHeld === 4);
  assert.ok(
    world.clock.now() - stoppedAt < 10_000,
    "released leases are taken before any lease could expire",
  );
  assert.equal((await a.stop()).ok, true);
  assert.deepEqual(new Set(committedEventIds(world.store)).size, 8);
});

Deno.test("runStreamWorker() takes over a crashed worker's shards within the lease duration", async () => {
  const world = createWorld();
  for (const s of ["s0", "s1"]) world.stream.addShard(s);
  const crashable = crashableStore(world.store);
  const a = startWorker(world, "a");
  const b = startWorker(world, "b", { store: crashable.store });
  await world.clock.runUntil(() =>
    a.metrics.leasesHeld === 1 && b.metrics.leasesHeld === 1
  );
  crashable.crash();
  const crashedAt = world.clock.now();
  await world.clock.runUntil(() => a.metrics.leasesHeld === 2);
  const elapsed = world.clock.now() - crashedAt;
  assert.ok(
    elapsed >= 10_000 && elapsed <= 10_000 + 2 * 3_333,
    `takeover after ${elapsed} ms`,
  );
  putMany(world, "s0", 1);
  putMany(world, "s1", 1);
  await world.clock.runUntil(() => committedEventIds(world.store).length === 2);
  assert.ok(world.handled.every((h) => h.workerId === "a"));
  assert.equal((await a.stop()).ok, true);
  assert.equal(
    (await b.stop()).ok,
    true,
    "the partitioned worker still shuts down cleanly",
  );
  assert.ok(
    b.metrics.leasesExpired >= 1,
    "the partitioned worker fenced itself",
  );
  assert.equal(b.metrics.leasesLost, 0, "an expiry is not a takeover");
  assert.ok(
    b.events.some((e) => e.kind === "lease_expired"),
    "and says so",
  );
  assert.ok(
    a.events.some((e) =>
      e.kind === "lease_taken" && e.reason === "expired" && e.from === "b"
    ),
  );
  assert.equal(a.metrics.leasesStolen, 0);
});

Deno.test("runStreamWorker() recovers an expired iterator after the last received record", async () => {
  const world = createWorld();
  world.stream.addShard("s0");
  putMany(world, "s0", 3);
  const w = startWorker(world, "a");
  await world.clock.runUntil(() => world.handled.length === 3);
  world.stream.expireIterators();
  putMany(world, "s0", 3);
  await world.clock.runUntil(() => world.handled.length === 6);
  assert.equal((await w.stop()).ok, true);
  assert.equal(w.metrics.expiredIterators, 1);
  const third = world.stream.records("s0")[2]?.sequenceNumber;
  assert.ok(
    world.stream.iteratorRequests.some((r) =>
      r.position.type === "AFTER_SEQUENCE_NUMBER" &&
      r.position.sequenceNumber === third
    ),
  );
  assert.equal(
    new Set(world.handled.map((h) => h.record.eventId)).size,
    6,
    "nothing read twice",
  );
});

Deno.test("runStreamWorker() reports trimmed data loudly and stalls the shard by default", async () => {
  const world = createWorld();
  world.stream.addShard("s0");
  putMany(world, "s0", 10);
  // A previous run checkpointed record 2, then the stream trimmed records 1-5.
  await world.store.createLease({ shardId: "s0", start: "TRIM_HORIZON" });
  await world.store.takeLease("s0", "old", { epoch: 0, counter: 0 });
  const seq2 = world.stream.records("s0")[1]?.sequenceNumber ?? "";
  await world.store.releaseLease(
    { shardId: "s0", owner: "old", epoch: 1 },
    seq2,
  );
  world.stream.trim("s0", 5);

  const w = startWorker(world, "a");
  await world.clock.runUntil(() =>
    w.metrics.dataLossEvents === 1 && w.metrics.stalledShards === 1
  );
  await world.clock.advance(20_000);
  assert.equal((await w.stop()).ok, true);
  assert.equal(world.handled.length, 0, "nothing skipped silently");
  const loss = w.events.find((e) => e.kind === "data_loss");
  assert.equal(loss?.kind, "data_loss");
  if (loss?.kind === "data_loss") {
    assert.equal(loss.afterSequenceNumber, seq2);
    assert.equal(loss.action, "stalled");
  }
  assert.equal(
    world.store.lease("s0")?.checkpoint,
    seq2,
    "checkpoint untouched",
  );
});

Deno.test("runStreamWorker() skips to the trim horizon only when told to, still reporting the loss", async () => {
  const world = createWorld();
  world.stream.addShard("s0");
  putMany(world, "s0", 10);
  await world.store.createLease({ shardId: "s0", start: "TRIM_HORIZON" });
  await world.store.takeLease("s0", "old", { epoch: 0, counter: 0 });
  await world.store.releaseLease(
    { shardId: "s0", owner: "old", epoch: 1 },
    world.stream.records("s0")[1]?.sequenceNumber,
  );
  world.stream.trim("s0", 5);
  const w = startWorker(world, "a", { onTrimmedData: "skip_to_trim_horizon" });
  await world.clock.runUntil(() => world.handled.length === 5);
  assert.equal((await w.stop()).ok, true);
  assert.equal(w.metrics.dataLossEvents, 1);
  assert.ok(
    w.events.some((e) =>
      e.kind === "data_loss" && e.action === "skipped_to_trim_horizon"
    ),
  );
  assert.deepEqual(
    world.handled.map((h) => h.record),
    world.stream.records("s0").slice(5),
  );
});

Deno.test("runStreamWorker() backs off on throttling and still delivers every record once", async () => {
  const world = createWorld();
  world.stream.addShard("s0");
  putMany(world, "s0", 4);
  world.stream.injectFault("getRecords", "STREAM_THROTTLED", 3);
  world.stream.injectFault("describeStream", "STREAM_THROTTLED", 1);
  const w = startWorker(world, "a");
  await world.clock.runUntil(() => world.handled.length === 4);
  assert.equal((await w.stop()).ok, true);
  assert.equal(w.metrics.throttles, 4);
  assert.equal(new Set(world.handled.map((h) => h.record.eventId)).size, 4);
});

Deno.test("runStreamWorker() drops its own coordination records without handling or writing", async () => {
  const world = createWorld();
  world.stream.addShard("s0");
  putMany(world, "s0", 5, `${COORDINATION_PK_PREFIX}agg#label`);
  const w = startWorker(world, "a");
  await world.clock.runUntil(() => w.metrics.frameworkRecords === 5);
  const commitsBefore = world.store.committed.length;
  await world.clock.advance(30_000);
  assert.equal((await w.stop()).ok, true);
  assert.equal(world.handled.length, 0);
  assert.equal(commitsBefore, 0);
  assert.equal(
    world.store.committed.length,
    0,
    "no commit triggered by framework records",
  );
  assert.equal(
    world.store.lease("s0")?.checkpoint,
    world.stream.records("s0")[4]?.sequenceNumber,
    "advanced by renewal",
  );
});

Deno.test("runStreamWorker() adapts polling: empty reads back off up to the idle cap", async () => {
  const world = createWorld();
  world.stream.addShard("s0");
  const w = startWorker(world, "a", {
    pollIntervalMs: 250,
    idlePollMaxMs: 2_000,
  });
  await world.clock.runUntil(() => w.metrics.getRecordsCalls >= 1);
  const calls0 = w.metrics.getRecordsCalls;
  await world.clock.advance(60_000);
  const idleCalls = w.metrics.getRecordsCalls - calls0;
  assert.ok(
    idleCalls <= 60_000 / 2_000 + 4,
    `${idleCalls} idle calls in a minute`,
  );
  assert.ok(idleCalls >= 60_000 / 2_000 - 4);
  assert.equal((await w.stop()).ok, true);
});

Deno.test("runStreamWorker() keeps per-key order with parallel lanes", async () => {
  const world = createWorld();
  world.stream.addShard("s0");
  for (let i = 0; i < 12; i++) {
    world.stream.put("s0", { pk: `ns/ENTITY#k${i % 3}`, sk: "#STATE" });
  }
  const w = startWorker(world, "a", {
    batchSize: 12,
    parallelism: 3,
    keyAttributes: ["PK", "SK"],
  });
  await world.clock.runUntil(() => world.handled.length === 12);
  assert.equal((await w.stop()).ok, true);
  for (const k of ["k0", "k1", "k2"]) {
    const seqs = world.handled.filter((h) =>
      h.record.keys["PK"]?.S?.endsWith(k)
    ).map((h) => BigInt(h.record.sequenceNumber));
    assert.deepEqual(
      seqs,
      [...seqs].sort((x, y) => (x < y ? -1 : 1)),
      `lane ${k} in order`,
    );
  }
  assert.equal(world.store.committed.length, 1, "all lanes commit together");
});

function networkError(): Error {
  return Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" });
}

Deno.test("runStreamWorker() retries commits that fail without an answer (even ones that landed) and stays up; every effect exactly once", async () => {
  const world = createWorld();
  world.stream.addShard("s0");
  putMany(world, "s0", 6);
  let failures = 0;
  const flaky: CoordinationStore = {
    ...world.store,
    async commit(fence, checkpoint, effects, signal) {
      failures++;
      if (failures === 1) throw networkError(); // not applied
      if (failures === 2) {
        // Applied, but the answer was lost (a reset connection after DynamoDB wrote it).
        await world.store.commit(fence, checkpoint, effects, signal);
        throw networkError();
      }
      return world.store.commit(fence, checkpoint, effects, signal);
    },
  };
  const w = startWorker(world, "a", { store: flaky, batchSize: 2 });
  await world.clock.runUntil(() => committedEventIds(world.store).length === 6);
  await world.clock.advance(5_000);
  assert.equal(w.finished(), false);
  assert.equal((await w.stop()).ok, true);
  assert.deepEqual(
    committedEventIds(world.store),
    world.stream.records("s0").map((r) => r.eventId),
  );
  assert.equal(w.metrics.commitRetries, 2);
  assert.equal(w.metrics.deadLetters, 0);
});

Deno.test("runStreamWorker() ends with the failure when the store refuses for good (access denied)", async () => {
  const world = createWorld();
  world.stream.addShard("s0");
  putMany(world, "s0", 2);
  const denied = Object.assign(new Error("not authorized"), {
    name: "AccessDeniedException",
    $metadata: { httpStatusCode: 400 },
  });
  const store: CoordinationStore = {
    ...world.store,
    commit: () => Promise.reject(denied),
  };
  const w = startWorker(world, "a", { store });
  await world.clock.runUntil(() => w.finished());
  const out = await w.result;
  assert.equal(out.ok, false);
  assert.equal(out.ok ? undefined : out.error, denied);
  assert.equal(
    world.store.lease("s0")?.owner,
    undefined,
    "released on the way out",
  );
});

Deno.test("runStreamWorker() drains within shutdownGraceMs when the store hangs, and reports what it could not finish", async () => {
  const world = createWorld();
  world.stream.addShard("s0");
  world.stream.addShard("s1");
  putMany(world, "s0", 2);
  let hang = false;
  const never = new Promise<never>(() => {});
  const hanging: CoordinationStore = {
    ...world.store,
    commit: (...args) => hang ? never : world.store.commit(...args),
    renewLease: (...args) => hang ? never : world.store.renewLease(...args),
    releaseLease: (...args) => hang ? never : world.store.releaseLease(...args),
    listLeases: (...args) => hang ? never : world.store.listLeases(...args),
  };
  const w = startWorker(world, "a", {
    store: hanging,
    shutdownGraceMs: 6_000,
    callTimeoutMs: 60_000, // longer than the grace: only the drain deadline can end the calls
  });
  await world.clock.runUntil(() => committedEventIds(world.store).length === 2);
  hang = true;
  putMany(world, "s0", 2); // its commit hangs
  await world.clock.advance(3_000);
  const stoppedAt = world.clock.now();
  w.controller.abort();
  await world.clock.runUntil(() => w.finished());
  const took = world.clock.now() - stoppedAt;
  assert.ok(took <= 6_000, `drained in ${took} ms`);
  const out = await w.result;
  assert.ok(out.ok);
  const { report } = out;
  assert.deepEqual(report.cutShort, ["s0"]);
  assert.deepEqual(report.notReleased.map((n) => n.shardId).sort(), [
    "s0",
    "s1",
  ]);
  assert.match(
    report.notReleased[0]?.reason ?? "",
    /did not answer within the shutdown grace/,
  );
  assert.equal(
    committedEventIds(world.store).length,
    2,
    "nothing half-committed",
  );
});

Deno.test("runStreamWorker() declares an outage once when reads keep failing, lets the lag grow, and ends it when reads answer again", async () => {
  const world = createWorld();
  world.stream.addShard("s0");
  putMany(world, "s0", 2);
  const w = startWorker(world, "a", { outageAfterMs: 3_000 });
  await world.clock.runUntil(() => committedEventIds(world.store).length === 2);
  await world.clock.advance(3_000);
  assert.ok(w.metrics.lagMs <= 2_500, `caught up: lag ${w.metrics.lagMs}`);
  world.stream.injectFault("getRecords", "STREAM_UNAVAILABLE", 12);
  world.stream.injectFault("getShardIterator", "STREAM_UNAVAILABLE", 12);
  await world.clock.runUntil(() =>
    w.events.some((e) =>
      e.kind === "dependency" && e.event.kind === "outage_started"
    )
  );
  assert.ok(w.metrics.lagMs >= 3_000, `lag grows: ${w.metrics.lagMs}`);
  await world.clock.runUntil(() =>
    w.events.some((e) =>
      e.kind === "dependency" && e.event.kind === "outage_ended"
    )
  );
  const outages = w.events.flatMap((e) =>
    e.kind === "dependency" ? [e.event.kind] : []
  ).filter((k) => k !== "call_failed");
  assert.deepEqual(outages, ["outage_started", "outage_ended"]);
  const ended = w.events.find((e) =>
    e.kind === "dependency" && e.event.kind === "outage_ended"
  );
  assert.ok(
    ended?.kind === "dependency" && ended.event.kind === "outage_ended" &&
      ended.event.durationMs >= 3_000,
  );
  assert.ok(w.finished() === false);
  putMany(world, "s0", 1);
  await world.clock.runUntil(() => committedEventIds(world.store).length === 3);
  assert.equal((await w.stop()).ok, true);
});
