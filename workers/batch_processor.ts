/**
 * Processing of one shard batch: stage-0 drop of framework records, user
 * filters, max record age, per-key lanes, handler invocation with bisect on
 * error and finite retries, the dead-letter sink, and the transactional
 * commit of "effects + checkpoint" (split so that each transaction stays
 * within DynamoDB's 100-action limit).
 *
 * A commit always covers a contiguous prefix of the batch (by sequence
 * number) and carries the checkpoint of its last record, so a replay after
 * a crash starts exactly after the last committed effects: nothing is
 * counted twice and nothing is lost.
 *
 * @module
 */
import type { TransactWriteItem } from "@aws-sdk/client-dynamodb";
import type { Clock } from "../core/clock.ts";
import { fullJitter } from "../core/_backoff.ts";
import { sleepUnlessAborted } from "./_util.ts";
import {
  type CommitResult,
  COORDINATION_PK_PREFIX,
  MAX_EFFECTS_PER_COMMIT,
} from "./coordination_store.ts";
import { classifyFailure, toError } from "./errors.ts";
import type { StreamWorkerEvent, StreamWorkerMetrics } from "./metrics.ts";
import type { StreamImage, StreamRecord } from "./stream_source.ts";

/** What a handler sees besides the records. */
export interface HandlerContext {
  /** Aborted when the lease is lost or the shutdown deadline passes. */
  readonly signal: AbortSignal;
  /** Shard being processed. */
  readonly shardId: string;
  /** Epoch of the lease the records are processed under. */
  readonly leaseEpoch: number;
  /** 1 for the first attempt on these records. */
  readonly attempt: number;
}

/** A record a handler cannot use, and why (in words that name what is wrong). */
export interface RejectedRecord {
  /** One of the records the handler was given. */
  readonly record: StreamRecord;
  /** Why it cannot be used, e.g. `attribute "b_rpm_tc" is a string, expected a whole number`. */
  readonly reason: string;
}

/** What a handler may return. */
export interface HandlerResult {
  /**
   * DynamoDB writes to commit atomically with the checkpoint. At most one
   * action per item across a batch; at most 99 per record.
   */
  readonly effects?: readonly TransactWriteItem[];
  /**
   * Records the handler cannot use (malformed items): they go to the
   * dead-letter sink with reason `invalid_record`, in the same commit as
   * the other records' effects, so none is dropped without a trace.
   */
  readonly rejected?: readonly RejectedRecord[];
}

/** The error of an `invalid_record` dead letter. */
export class InvalidRecordError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "InvalidRecordError";
  }
}

/**
 * Processes records in order. Throwing an error with `retryable: false`
 * sends the records to the dead-letter sink without further attempts.
 */
export type StreamHandler = (
  records: readonly StreamRecord[],
  ctx: HandlerContext,
) => Promise<HandlerResult | void>;

/** A predicate on a record; the worker's filters are OR-ed. */
export type RecordFilter = (record: StreamRecord) => boolean;

/** Why a record was dead-lettered. */
export type DeadLetterReason =
  | "retries_exhausted"
  | "non_retryable"
  | "max_record_age"
  | "effects_rejected"
  | "too_many_effects"
  | "invalid_record";

/** A record given up on, with everything needed to redrive it. */
export interface DeadLetter {
  /** Shard id. */
  readonly shardId: string;
  /** The full record. */
  readonly record: StreamRecord;
  /** Why. */
  readonly reason: DeadLetterReason;
  /** The last error. */
  readonly error: Error;
  /** Handler attempts made on the record in its last segment. */
  readonly attempts: number;
  /** The workload that gave up on it, when the sink serves one workload. */
  readonly workload?: string;
}

/**
 * Receives dead letters. Called before the checkpoint that skips them is
 * committed, so a crash in between delivers them again: sinks should be
 * idempotent on `(shardId, record.sequenceNumber)`.
 */
export interface DeadLetterSink {
  /** Stores the letters durably. */
  send(letters: readonly DeadLetter[], signal?: AbortSignal): Promise<void>;
}

/** An in-memory sink that keeps every letter. */
export interface MemoryDeadLetterSink extends DeadLetterSink {
  /** Letters received, in order. */
  readonly letters: readonly DeadLetter[];
}

/**
 * Creates an in-memory {@linkcode DeadLetterSink}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createMemoryDeadLetterSink } from "./batch_processor.ts";
 *
 * const sink = createMemoryDeadLetterSink();
 * assert.equal(sink.letters.length, 0);
 * ```
 */
export function createMemoryDeadLetterSink(): MemoryDeadLetterSink {
  const letters: DeadLetter[] = [];
  return {
    letters,
    send(batch: readonly DeadLetter[]): Promise<void> {
      letters.push(...batch);
      return Promise.resolve();
    },
  };
}

/** Resolved processing settings (see `StreamWorkerOptions` for defaults). */
export interface ProcessingConfig {
  /** The handler. */
  readonly handler: StreamHandler;
  /** OR-ed filters; empty accepts every record. */
  readonly filters: readonly RecordFilter[];
  /** Partition-key prefix of framework records. */
  readonly frameworkPrefix: string;
  /** Handler attempts per record (or per segment without bisect). */
  readonly maxAttempts: number;
  /** Split a failing multi-record segment in halves. */
  readonly bisectOnError: boolean;
  /** Records older than this are dead-lettered. */
  readonly maxRecordAgeMs: number;
  /** Concurrent lanes per shard; 1 keeps strict shard order. */
  readonly parallelism: number;
  /** Lane key when `parallelism > 1`. */
  readonly laneKey: (record: StreamRecord) => string;
  /** Key attributes used to spot two effects on one item. */
  readonly keyAttributes: readonly string[];
  /** First retry backoff ceiling. */
  readonly retryBaseMs: number;
  /** Retry backoff cap. */
  readonly retryMaxMs: number;
  /** Dead-letter sink. */
  readonly deadLetterSink: DeadLetterSink;
  /** Clock. */
  readonly clock: Clock;
  /** Random source for jitter, in [0, 1). */
  readonly random: () => number;
}

/** The per-shard environment of a batch. */
export interface BatchEnvironment {
  /** Shard id. */
  readonly shardId: string;
  /** Lease epoch. */
  readonly epoch: number;
  /** Stops new attempts (shutdown or lease loss); abandons the batch without committing. */
  readonly stopSignal: AbortSignal;
  /**
   * Aborts handlers, commits and their retries (lease loss or shutdown
   * deadline). Until it aborts, a commit or dead-letter write that fails
   * transiently is retried with backoff.
   */
  readonly hardSignal: AbortSignal;
  /** Commits effects + checkpoint under the lease fence. */
  commit(
    checkpoint: string,
    effects: readonly TransactWriteItem[],
    signal: AbortSignal,
  ): Promise<CommitResult>;
  /** Counters to update. */
  readonly metrics: StreamWorkerMetrics;
  /** Event callback. */
  readonly emit: (event: StreamWorkerEvent) => void;
}

/** Outcome of {@linkcode processBatch}. */
export type BatchOutcome =
  /** Every record is done; `committed` is false when the checkpoint was left for the next renewal. */
  | {
    readonly kind: "done";
    readonly checkpoint: string;
    readonly committed: boolean;
  }
  /** The fence failed: nothing more may be written for this lease. */
  | { readonly kind: "lease_lost" }
  /** Shutdown interrupted retries; the uncommitted rest will be re-read by the next owner. */
  | { readonly kind: "abandoned"; readonly checkpoint?: string };

/** Whether a record is one of the framework's own coordination items. */
export function isFrameworkRecord(
  record: StreamRecord,
  prefix: string = COORDINATION_PK_PREFIX,
): boolean {
  return record.keys["PK"]?.S?.startsWith(prefix) ?? false;
}

/** Default lane key: the full primary key. */
export function primaryKeyLane(record: StreamRecord): string {
  return imageKey(record.keys, Object.keys(record.keys));
}

function imageKey(image: StreamImage, attributes: readonly string[]): string {
  return [...attributes].sort().map((a) =>
    `${a}=${JSON.stringify(image[a] ?? null)}`
  ).join("\u0000");
}

/** The item an effect writes, as a string, or `undefined` when unknown. */
export function effectTarget(
  effect: TransactWriteItem,
  keyAttributes: readonly string[],
): string | undefined {
  const op = effect.Put ?? effect.Update ?? effect.Delete ??
    effect.ConditionCheck;
  if (op === undefined) return undefined;
  const keys = "Key" in op && op.Key !== undefined
    ? op.Key
    : "Item" in op
    ? op.Item
    : undefined;
  if (keys === undefined) return undefined;
  const present = keyAttributes.filter((a) => keys[a] !== undefined);
  if (present.length === 0) return undefined;
  return `${op.TableName ?? ""}\u0001${imageKey(keys, present)}`;
}

function hasDuplicateTargets(
  effects: readonly TransactWriteItem[],
  keyAttributes: readonly string[],
): boolean {
  const seen = new Set<string>();
  for (const e of effects) {
    const t = effectTarget(e, keyAttributes);
    if (t === undefined) continue;
    if (seen.has(t)) return true;
    seen.add(t);
  }
  return false;
}

class Abandoned extends Error {
  constructor() {
    super("Cannot continue batch: shutting down");
    this.name = "Abandoned";
  }
}

interface SegmentResult {
  readonly effects: TransactWriteItem[];
  readonly deadLetters: DeadLetter[];
}

function lastSequence(records: readonly StreamRecord[]): string {
  const last = records[records.length - 1];
  if (last === undefined) {
    throw new RangeError("Cannot take the checkpoint of an empty batch");
  }
  return last.sequenceNumber;
}

/** The key attributes of a record as text, for logs. */
export function recordKey(record: StreamRecord): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(record.keys)) {
    out[name] = value.S ?? value.N ?? JSON.stringify(value);
  }
  return out;
}

/** Most a commit or dead-letter write waits between two attempts. */
const WRITE_RETRY_CAP_MS = 5_000;

/**
 * Processes one batch read from a shard and commits it.
 *
 * @param batch Records in shard order (non-empty).
 * @param config Resolved processing settings.
 * @param env The shard's lease fence, signals and counters.
 * @returns How the batch ended.
 * @throws {Error} a store failure that no retry can fix (`classifyFailure()`
 * says `fatal`: access denied, a missing table); transient failures are
 * retried until `env.hardSignal` aborts
 */
export async function processBatch(
  batch: readonly StreamRecord[],
  config: ProcessingConfig,
  env: BatchEnvironment,
): Promise<BatchOutcome> {
  const m = env.metrics;
  m.batches++;
  const deliver = new Set<StreamRecord>();
  for (const r of batch) {
    if (isFrameworkRecord(r, config.frameworkPrefix)) {
      m.frameworkRecords++;
    } else if (config.filters.length > 0 && !config.filters.some((f) => f(r))) {
      m.recordsFiltered++;
    } else {
      deliver.add(r);
    }
  }
  if (deliver.size === 0) {
    // Stage-0 rule: records nobody handles never cause a write.
    m.deferredCheckpoints++;
    return { kind: "done", checkpoint: lastSequence(batch), committed: false };
  }

  let committedUpTo: string | undefined;

  async function processChunk(
    raw: readonly StreamRecord[],
  ): Promise<BatchOutcome> {
    const deliverable = raw.filter((r) => deliver.has(r));
    const checkpoint = lastSequence(raw);
    if (deliverable.length === 0) {
      m.deferredCheckpoints++;
      return { kind: "done", checkpoint, committed: false };
    }
    let result: SegmentResult;
    try {
      result = await runLanes(deliverable);
    } catch (error) {
      if (error instanceof Abandoned) {
        return committedUpTo === undefined
          ? { kind: "abandoned" }
          : { kind: "abandoned", checkpoint: committedUpTo };
      }
      throw error;
    }
    let { effects, deadLetters } = result;
    if (
      effects.length > MAX_EFFECTS_PER_COMMIT ||
      hasDuplicateTargets(effects, config.keyAttributes)
    ) {
      if (deliverable.length > 1) return splitChunk(raw, deliverable);
      const [only] = deliverable;
      if (only === undefined) {
        throw new RangeError("Cannot split an empty chunk");
      }
      const reason = effects.length > MAX_EFFECTS_PER_COMMIT
        ? `${effects.length} effects exceed ${MAX_EFFECTS_PER_COMMIT}`
        : "two effects target the same item";
      deadLetters = [
        deadLetter(
          only,
          "too_many_effects",
          new RangeError(`Cannot commit record effects: ${reason}`),
          1,
        ),
      ];
      effects = [];
    }
    for (;;) {
      if (deadLetters.length > 0) {
        const letters = deadLetters;
        const sent = await writeWithRetry(() =>
          config.deadLetterSink.send(letters, env.hardSignal)
        );
        if (sent === undefined) return { kind: "lease_lost" };
        m.deadLetters += deadLetters.length;
        for (const d of deadLetters) {
          env.emit({
            kind: "dead_letter",
            shardId: env.shardId,
            sequenceNumber: d.record.sequenceNumber,
            reason: d.reason,
            key: recordKey(d.record),
            error: d.error,
          });
        }
      }
      const outcome = await commitWithRetry(checkpoint, effects);
      switch (outcome.kind) {
        case "committed":
          m.commits++;
          m.effectsCommitted += effects.length;
          committedUpTo = checkpoint;
          return { kind: "done", checkpoint, committed: true };
        case "lease_lost":
          return outcome;
        case "rejected": {
          if (deliverable.length > 1) return splitChunk(raw, deliverable);
          const [only] = deliverable;
          if (only === undefined) {
            throw new RangeError("Cannot split an empty chunk");
          }
          deadLetters = [
            deadLetter(
              only,
              "effects_rejected",
              new Error(`Cannot commit record effects: ${outcome.reason}`),
              1,
            ),
          ];
          effects = [];
          continue;
        }
        default: {
          const _exhaustive: never = outcome;
          throw new TypeError(`Unknown commit outcome ${String(_exhaustive)}`);
        }
      }
    }
  }

  async function splitChunk(
    raw: readonly StreamRecord[],
    deliverable: readonly StreamRecord[],
  ): Promise<BatchOutcome> {
    m.commitSplits++;
    const pivot = deliverable[Math.floor(deliverable.length / 2)];
    const at = pivot === undefined ? -1 : raw.indexOf(pivot);
    if (at <= 0) {
      throw new RangeError(
        "Cannot split a chunk with fewer than two deliverable records",
      );
    }
    const left = await processChunk(raw.slice(0, at));
    if (left.kind !== "done") return left;
    return processChunk(raw.slice(at));
  }

  /**
   * Runs a write until it succeeds, retrying transient failures with
   * backoff; `undefined` when `env.hardSignal` aborted first. A failure no
   * retry can fix is thrown.
   */
  async function writeWithRetry<T>(
    write: () => Promise<T>,
  ): Promise<{ readonly value: T } | undefined> {
    for (let attempt = 0;; attempt++) {
      if (env.hardSignal.aborted) return undefined;
      try {
        return { value: await write() };
      } catch (error) {
        if (env.hardSignal.aborted) return undefined;
        if (classifyFailure(error) === "fatal") throw error;
        m.commitRetries++;
        const delay = fullJitter(
          attempt,
          Math.max(1, config.retryBaseMs),
          Math.min(config.retryMaxMs, WRITE_RETRY_CAP_MS),
          config.random,
        );
        if (!(await sleepUnlessAborted(config.clock, delay, env.hardSignal))) {
          return undefined;
        }
      }
    }
  }

  async function commitWithRetry(
    checkpoint: string,
    effects: readonly TransactWriteItem[],
  ): Promise<CommitResult> {
    const out = await writeWithRetry(() =>
      env.commit(checkpoint, effects, env.hardSignal)
    );
    return out?.value ?? { kind: "lease_lost" };
  }

  function deadLetter(
    record: StreamRecord,
    reason: DeadLetterReason,
    error: Error,
    attempts: number,
  ): DeadLetter {
    return { shardId: env.shardId, record, reason, error, attempts };
  }

  function isTooOld(record: StreamRecord): boolean {
    return config.clock.now() - record.approximateCreationTime >
      config.maxRecordAgeMs;
  }

  async function runLanes(
    records: readonly StreamRecord[],
  ): Promise<SegmentResult> {
    const deadLetters: DeadLetter[] = [];
    const fresh: StreamRecord[] = [];
    for (const r of records) {
      if (isTooOld(r)) {
        deadLetters.push(
          deadLetter(
            r,
            "max_record_age",
            new RangeError("Cannot process record: too old"),
            0,
          ),
        );
      } else {
        fresh.push(r);
      }
    }
    const lanes: StreamRecord[][] = [];
    if (config.parallelism <= 1) {
      if (fresh.length > 0) lanes.push(fresh);
    } else {
      const byKey = new Map<string, StreamRecord[]>();
      for (const r of fresh) {
        const k = config.laneKey(r);
        const lane = byKey.get(k);
        if (lane) lane.push(r);
        else byKey.set(k, [r]);
      }
      lanes.push(...byKey.values());
    }
    const results: (SegmentResult | undefined)[] = new Array(lanes.length);
    let next = 0;
    async function laneWorker(): Promise<void> {
      while (next < lanes.length) {
        const i = next++;
        const lane = lanes[i];
        if (lane !== undefined) results[i] = await runSegment(lane);
      }
    }
    const settled = await Promise.allSettled(
      Array.from(
        { length: Math.min(config.parallelism, lanes.length) },
        () => laneWorker(),
      ),
    );
    for (const s of settled) if (s.status === "rejected") throw s.reason;
    const effects: TransactWriteItem[] = [];
    for (const r of results) {
      if (r === undefined) continue;
      effects.push(...r.effects);
      deadLetters.push(...r.deadLetters);
    }
    return { effects, deadLetters };
  }

  async function invoke(
    records: readonly StreamRecord[],
    attempt: number,
  ): Promise<
    | { ok: true; effects: TransactWriteItem[]; rejected: DeadLetter[] }
    | { ok: false; error: Error }
  > {
    m.recordsDelivered += attempt === 1 ? records.length : 0;
    try {
      const out = await config.handler(records, {
        signal: env.hardSignal,
        shardId: env.shardId,
        leaseEpoch: env.epoch,
        attempt,
      });
      const given = new Set(records);
      const rejected: DeadLetter[] = [];
      for (const r of out?.rejected ?? []) {
        if (!given.has(r.record)) {
          throw new TypeError(
            "Cannot reject a record the handler was not given",
          );
        }
        rejected.push(
          deadLetter(
            r.record,
            "invalid_record",
            new InvalidRecordError(r.reason),
            attempt,
          ),
        );
      }
      return { ok: true, effects: [...(out?.effects ?? [])], rejected };
    } catch (error) {
      m.handlerErrors++;
      return { ok: false, error: toError(error) };
    }
  }

  async function runSegment(
    records: readonly StreamRecord[],
    firstAttempt = 1,
  ): Promise<SegmentResult> {
    if (env.stopSignal.aborted) throw new Abandoned();
    if (config.bisectOnError && records.length > 1) {
      const r = await invoke(records, firstAttempt);
      if (r.ok) return { effects: r.effects, deadLetters: r.rejected };
      m.bisects++;
      const mid = Math.ceil(records.length / 2);
      const left = await runSegment(records.slice(0, mid), firstAttempt + 1);
      const right = await runSegment(records.slice(mid), firstAttempt + 1);
      return {
        effects: [...left.effects, ...right.effects],
        deadLetters: [...left.deadLetters, ...right.deadLetters],
      };
    }
    let lastError: Error | undefined;
    for (let attempt = 1;; attempt++) {
      if (records.some(isTooOld)) {
        const error = lastError ??
          new RangeError("Cannot process record: too old");
        return {
          effects: [],
          deadLetters: records.map((r) =>
            deadLetter(r, "max_record_age", error, attempt - 1)
          ),
        };
      }
      const r = await invoke(records, firstAttempt + attempt - 1);
      if (r.ok) return { effects: r.effects, deadLetters: r.rejected };
      lastError = r.error;
      const nonRetryable =
        (r.error as { retryable?: unknown }).retryable === false;
      if (nonRetryable || attempt >= config.maxAttempts) {
        const reason: DeadLetterReason = nonRetryable
          ? "non_retryable"
          : "retries_exhausted";
        return {
          effects: [],
          deadLetters: records.map((rec) =>
            deadLetter(rec, reason, r.error, attempt)
          ),
        };
      }
      m.retries++;
      const delay = fullJitter(
        attempt - 1,
        config.retryBaseMs,
        config.retryMaxMs,
        config.random,
      );
      if (!(await sleepUnlessAborted(config.clock, delay, env.stopSignal))) {
        throw new Abandoned();
      }
    }
  }

  return await processChunk(batch);
}
