/**
 * Shared fixtures of the worker tests (was `workers/_test_support.ts`).
 *
 * @module
 */
import assert from "node:assert/strict";
import type { TransactWriteItem } from "@aws-sdk/client-dynamodb";
import { FakeStream, type FakeStreamOptions } from "./fake_stream.ts";
import { VirtualClock } from "./virtual_clock.ts";
import {
  createMemoryDeadLetterSink,
  type MemoryDeadLetterSink,
  type StreamHandler,
} from "../../workers/batch_processor.ts";
import {
  type CoordinationStore,
  createMemoryCoordinationStore,
  type MemoryCoordinationStore,
} from "../../workers/coordination_store.ts";
import {
  createStreamWorkerMetrics,
  type StreamWorkerEvent,
  type StreamWorkerMetrics,
} from "../../workers/metrics.ts";
import type { StreamRecord } from "../../workers/stream_source.ts";
import {
  runStreamWorker,
  type StreamWorkerOptions,
  type StreamWorkerStopReport,
} from "../../workers/stream_worker.ts";

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

/**
 * Checks the text exposition format 0.0.4 line by line, the way
 * `promtool check metrics` does for structure: every line is a HELP, a TYPE
 * or a sample; each family has one HELP and one TYPE, before its samples;
 * samples of a family are contiguous; histogram samples are `_bucket` (with
 * `le`, cumulative, ending with `+Inf`), `_sum` and `_count`.
 * @returns the samples by family name
 */
export function parseExposition(
  text: string,
): Map<string, { type: string; help: string; samples: string[] }> {
  assert.ok(text.endsWith("\n"), "ends with a newline");
  const families = new Map<
    string,
    { type: string; help: string; samples: string[] }
  >();
  const name = "[a-zA-Z_:][a-zA-Z0-9_:]*";
  const labels =
    `\\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\[\\\\"n])*",?)*\\}`;
  const value =
    "(?:[-+]?(?:[0-9]*\\.?[0-9]+(?:[eE][-+]?[0-9]+)?)|[-+]?Inf|(?:NaN|Nan|nan))";
  const sample = new RegExp(`^(${name})(${labels})? (${value})$`);
  let current: string | undefined;
  const closed = new Set<string>();
  for (const line of text.slice(0, -1).split("\n")) {
    if (line === "") continue; // blank lines are ignored by the format
    const meta = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
    if (meta) {
      const [, kind, fam = "", rest = ""] = meta;
      assert.match(fam, new RegExp(`^${name}$`), line);
      if (current !== fam && current !== undefined) closed.add(current);
      assert.ok(!closed.has(fam), `family ${fam} is split: ${line}`);
      current = fam;
      const f = families.get(fam) ?? { type: "", help: "", samples: [] };
      families.set(fam, f);
      if (kind === "HELP") {
        assert.equal(f.help, "", `second HELP for ${fam}`);
        assert.ok(rest.trim().length > 0, `empty HELP for ${fam}`);
        f.help = rest;
      } else {
        assert.equal(f.type, "", `second TYPE for ${fam}`);
        assert.match(rest, /^(counter|gauge|histogram|summary|untyped)$/);
        assert.equal(f.samples.length, 0, `TYPE after samples for ${fam}`);
        f.type = rest;
      }
      continue;
    }
    const m = sample.exec(line);
    assert.ok(m, `not a valid sample line: ${JSON.stringify(line)}`);
    const sampleName = m[1] ?? "";
    assert.ok(current, `sample before any family: ${line}`);
    const f = families.get(current);
    assert.ok(f);
    if (f.type === "histogram") {
      assert.match(
        sampleName,
        new RegExp(`^${current}_(bucket|sum|count)$`),
        line,
      );
      if (sampleName.endsWith("_bucket")) assert.match(line, /le="/);
    } else {
      assert.equal(sampleName, current, `sample outside its family: ${line}`);
    }
    f.samples.push(line);
  }
  for (const [fam, f] of families) {
    assert.ok(f.type && f.help, `${fam} has HELP and TYPE`);
    if (f.type !== "histogram") continue;
    // Buckets are cumulative per label set and end with +Inf equal to _count.
    const byLabels = new Map<string, number[]>();
    for (const s of f.samples.filter((s) => s.includes("_bucket{"))) {
      const key = s.replace(/le="[^"]*",?/, "").replace(/ [^ ]+$/, "")
        .replace(`${fam}_bucket`, "");
      const v = Number(s.slice(s.lastIndexOf(" ") + 1));
      byLabels.set(key, [...(byLabels.get(key) ?? []), v]);
      if (s.includes('le="+Inf"')) {
        const count = f.samples.find((c) =>
          c.startsWith(`${fam}_count${key === "{}" ? "" : key}`) &&
          c.slice(c.lastIndexOf(" ") + 1) === String(v)
        );
        assert.ok(count, `${fam}${key}: +Inf bucket equals _count`);
      }
    }
    for (const [key, vs] of byLabels) {
      for (let i = 1; i < vs.length; i++) {
        assert.ok((vs[i] ?? 0) >= (vs[i - 1] ?? 0), `${fam}${key} cumulative`);
      }
    }
  }
  return families;
}
