/**
 * Shared fixtures of the worker tests (not exported from `mod.ts`).
 *
 * @module
 */
import type { TransactWriteItem } from "@aws-sdk/client-dynamodb";
import {
  FakeStream,
  type FakeStreamOptions,
} from "../tests/_fakes/fake_stream.ts";
import { VirtualClock } from "../tests/_fakes/virtual_clock.ts";
import {
  createMemoryDeadLetterSink,
  type MemoryDeadLetterSink,
  type StreamHandler,
} from "./batch_processor.ts";
import {
  type CoordinationStore,
  createMemoryCoordinationStore,
  type MemoryCoordinationStore,
} from "./coordination_store.ts";
import {
  createStreamWorkerMetrics,
  type StreamWorkerEvent,
  type StreamWorkerMetrics,
} from "./metrics.ts";
import type { StreamRecord } from "./stream_source.ts";
import {
  runStreamWorker,
  type StreamWorkerOptions,
  type StreamWorkerStopReport,
} from "./stream_worker.ts";

/** One effect per record, on a distinct item keyed by the event id. */
export function effectFor(record: StreamRecord): TransactWriteItem {
  return {
    Put: {
      TableName: "t",
      Item: { PK: { S: "fx" }, SK: { S: record.eventId } },
    },
  };
}

/** Event ids of every committed effect, in commit order. */
export function committedEventIds(store: MemoryCoordinationStore): string[] {
  return store.committed.flatMap((t) =>
    t.effects.map((e) => e.Put?.Item?.["SK"]?.S ?? "?")
  );
}

/** A test world: virtual clock, fake stream, in-memory store and sink. */
export interface World {
  readonly clock: VirtualClock;
  readonly stream: FakeStream;
  readonly store: MemoryCoordinationStore;
  readonly sink: MemoryDeadLetterSink;
  /** Records handed to any handler, in order, tagged with the worker id. */
  readonly handled: {
    readonly workerId: string;
    readonly record: StreamRecord;
  }[];
}

/** Creates a world. */
export function createWorld(
  options: Partial<Omit<FakeStreamOptions, "clock">> = {},
): World {
  const clock = new VirtualClock();
  return {
    clock,
    stream: new FakeStream({ clock, ...options }),
    store: createMemoryCoordinationStore(),
    sink: createMemoryDeadLetterSink(),
    handled: [],
  };
}

/** How a worker ended: its drain report, or the error it failed with. */
export type WorkerOutcome =
  | { ok: true; report: StreamWorkerStopReport }
  | { ok: false; error: unknown };

/** A running worker. */
export interface RunningWorker {
  readonly workerId: string;
  readonly metrics: StreamWorkerMetrics;
  readonly events: StreamWorkerEvent[];
  readonly controller: AbortController;
  /** Whether the worker promise settled. */
  readonly finished: () => boolean;
  /** The settled outcome (never rejects). */
  readonly result: Promise<WorkerOutcome>;
  /** Aborts, runs the clock until the worker settles, and returns its outcome. */
  stop(): Promise<WorkerOutcome>;
}

/** Handler that records and returns one effect per record. */
export function recordingHandler(
  world: World,
  workerId: string,
  inner?: StreamHandler,
): StreamHandler {
  return async (records, ctx) => {
    for (const record of records) world.handled.push({ workerId, record });
    if (inner) return await inner(records, ctx);
    return { effects: records.map(effectFor) };
  };
}

/** Starts a worker in the world. */
export function startWorker(
  world: World,
  workerId: string,
  options: Partial<StreamWorkerOptions> & {
    readonly store?: CoordinationStore;
  } = {},
): RunningWorker {
  const controller = new AbortController();
  const metrics = createStreamWorkerMetrics();
  const events: StreamWorkerEvent[] = [];
  let done = false;
  const result = runStreamWorker({
    source: world.stream,
    store: world.store,
    deadLetterSink: world.sink,
    clock: world.clock,
    random: () => 0.5,
    workerId,
    metrics,
    onEvent: (e) => events.push(e),
    signal: controller.signal,
    ...options,
    handler: options.handler ?? recordingHandler(world, workerId),
  }).then(
    (report): WorkerOutcome => ({ ok: true, report }),
    (error: unknown): WorkerOutcome => ({ ok: false, error }),
  ).finally(() => {
    done = true;
  });
  return {
    workerId,
    metrics,
    events,
    controller,
    finished: () => done,
    result,
    async stop() {
      controller.abort();
      await world.clock.runUntil(() => done);
      return await result;
    },
  };
}

/** Wraps a store so that every call fails after `crash()`, like a dead process or partition. */
export function crashableStore(
  store: CoordinationStore,
): { store: CoordinationStore; crash(): void } {
  let crashed = false;
  const fail = (): Promise<never> =>
    Promise.reject(new Error("Cannot reach store: process crashed"));
  return {
    crash() {
      crashed = true;
    },
    store: {
      listLeases: (s) => crashed ? fail() : store.listLeases(s),
      createLease: (l, s) => crashed ? fail() : store.createLease(l, s),
      takeLease: (id, o, obs, s) =>
        crashed ? fail() : store.takeLease(id, o, obs, s),
      renewLease: (f, c, s) => crashed ? fail() : store.renewLease(f, c, s),
      releaseLease: (f, c, s) => crashed ? fail() : store.releaseLease(f, c, s),
      endLease: (f, c, s) => crashed ? fail() : store.endLease(f, c, s),
      commit: (f, c, e, s) => crashed ? fail() : store.commit(f, c, e, s),
    },
  };
}
