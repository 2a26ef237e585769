/**
 * How a worker lives through DynamoDB and DynamoDB Streams failures: every
 * call gets a deadline, every failure is classified
 * ({@linkcode classifyFailure}) and counted by operation, and a dependency
 * that keeps failing for `outageAfterMs` is declared down (one event when
 * the outage starts, one when it ends, with its duration). Readiness and
 * metrics read {@linkcode DependencyHealth}; the ports are wrapped by
 * {@linkcode instrumentStore}, {@linkcode instrumentSource} and
 * {@linkcode instrumentDeadLetterSink}.
 *
 * @module
 */
import type { Clock } from "../core/clock.ts";
import { callWithDeadline } from "./_util.ts";
import type { DeadLetterSink } from "./batch_processor.ts";
import type { CoordinationStore } from "./coordination_store.ts";
import { classifyFailure, type FailureClass, toError } from "./errors.ts";
import type { StreamSource } from "./stream_source.ts";

/** The services a worker depends on. */
export const DEPENDENCIES = ["dynamodb", "streams"] as const;
/** One of {@linkcode DEPENDENCIES}. */
export type Dependency = typeof DEPENDENCIES[number];

/** What {@linkcode DependencyHealth} reports. */
export type DependencyEvent =
  /** The first failure after a success: logged once per streak, then retried. */
  | {
    readonly kind: "call_failed";
    readonly dependency: Dependency;
    readonly operation: string;
    readonly failure: FailureClass;
    readonly error: Error;
  }
  /** Calls kept failing for `outageAfterMs`: the dependency is down. */
  | {
    readonly kind: "outage_started";
    readonly dependency: Dependency;
    readonly since: number;
    readonly operation: string;
    readonly error: Error;
  }
  /** A call succeeded again after an outage. */
  | {
    readonly kind: "outage_ended";
    readonly dependency: Dependency;
    readonly since: number;
    readonly until: number;
    readonly durationMs: number;
    readonly failedCalls: number;
  };

/** Options of {@linkcode DependencyHealth}. */
export interface DependencyHealthOptions {
  /** Clock. */
  readonly clock: Clock;
  /** Failures without a success in between for this long declare an outage. @default 5000 */
  readonly outageAfterMs?: number;
  /** Receives the events. */
  readonly onEvent?: (event: DependencyEvent) => void;
}

interface Streak {
  since: number;
  failures: number;
  declared: boolean;
  operation: string;
  error: Error;
}

/** A failed-call counter. */
export interface ErrorCount {
  /** The service. */
  readonly dependency: Dependency;
  /** The logical operation (`commit`, `renew_lease`, `get_records`, ...). */
  readonly operation: string;
  /** Failed calls so far. */
  readonly count: number;
}

/** A dependency that is down. */
export interface Outage {
  /** The service. */
  readonly dependency: Dependency;
  /** Epoch ms of the first failure of the streak. */
  readonly since: number;
  /** Failed calls since. */
  readonly failedCalls: number;
  /** The last failure. */
  readonly error: Error;
}

/**
 * Reachability of DynamoDB and DynamoDB Streams as seen by the calls a
 * worker makes, and failed calls by operation.
 *
 * A call that gets an answer (a success, a throttle, a refusal) proves the
 * service reachable; an `unreachable` failure starts or extends a streak;
 * a streak as old as `outageAfterMs` is an outage.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DependencyHealth } from "./resilience.ts";
 *
 * let now = 0;
 * const events: string[] = [];
 * const health = new DependencyHealth({
 *   clock: { now: () => now, sleep: () => Promise.resolve() },
 *   outageAfterMs: 1000,
 *   onEvent: (e) => events.push(e.kind),
 * });
 * const refused = Object.assign(new Error("refused"), { code: "ECONNREFUSED" });
 * health.failure("dynamodb", "commit", refused);
 * now = 1500;
 * health.failure("dynamodb", "renew_lease", refused);
 * assert.equal(health.outages()[0]?.dependency, "dynamodb");
 * health.success("dynamodb", "renew_lease");
 * assert.deepEqual(events, ["call_failed", "outage_started", "outage_ended"]);
 * assert.equal(health.errors().find((e) => e.operation === "commit")?.count, 1);
 * ```
 */
export class DependencyHealth {
  readonly #clock: Clock;
  readonly #outageAfterMs: number;
  readonly #onEvent: (event: DependencyEvent) => void;
  readonly #streaks = new Map<Dependency, Streak>();
  readonly #errors = new Map<string, ErrorCount>();
  readonly #lastSuccess = new Map<Dependency, number>();

  /** Creates the tracker. */
  constructor(options: DependencyHealthOptions) {
    this.#clock = options.clock;
    this.#outageAfterMs = options.outageAfterMs ?? 5_000;
    this.#onEvent = options.onEvent ?? ((): void => {});
  }

  /** A call of `operation` got an answer. */
  success(dependency: Dependency, _operation: string): void {
    const now = this.#clock.now();
    this.#lastSuccess.set(dependency, now);
    const streak = this.#streaks.get(dependency);
    if (streak === undefined) return;
    this.#streaks.delete(dependency);
    if (streak.declared) {
      this.#onEvent({
        kind: "outage_ended",
        dependency,
        since: streak.since,
        until: now,
        durationMs: now - streak.since,
        failedCalls: streak.failures,
      });
    }
  }

  /** A call of `operation` failed; returns its class (see {@linkcode classifyFailure}). */
  failure(
    dependency: Dependency,
    operation: string,
    error: unknown,
  ): FailureClass {
    const e = toError(error);
    const failure = classifyFailure(e);
    const id = `${dependency}\u0000${operation}`;
    const count = (this.#errors.get(id)?.count ?? 0) + 1;
    this.#errors.set(id, { dependency, operation, count });
    if (failure !== "unreachable") {
      // An answer, even a refusal, proves the service reachable.
      const streak = this.#streaks.get(dependency);
      if (streak === undefined || !streak.declared) {
        this.#onEvent({
          kind: "call_failed",
          dependency,
          operation,
          failure,
          error: e,
        });
      }
      this.success(dependency, operation);
      return failure;
    }
    let streak = this.#streaks.get(dependency);
    if (streak === undefined) {
      streak = {
        since: this.#clock.now(),
        failures: 0,
        declared: false,
        operation,
        error: e,
      };
      this.#streaks.set(dependency, streak);
      this.#onEvent({
        kind: "call_failed",
        dependency,
        operation,
        failure,
        error: e,
      });
    }
    streak.failures++;
    streak.operation = operation;
    streak.error = e;
    this.check();
    return failure;
  }

  /** Declares the outages that are due (also done by every failure and by {@linkcode outages}). */
  check(): void {
    const now = this.#clock.now();
    for (const [dependency, streak] of this.#streaks) {
      if (streak.declared || now - streak.since < this.#outageAfterMs) continue;
      streak.declared = true;
      this.#onEvent({
        kind: "outage_started",
        dependency,
        since: streak.since,
        operation: streak.operation,
        error: streak.error,
      });
    }
  }

  /** The dependencies that are down now. */
  outages(): Outage[] {
    this.check();
    const out: Outage[] = [];
    for (const [dependency, s] of this.#streaks) {
      if (!s.declared) continue;
      out.push({
        dependency,
        since: s.since,
        failedCalls: s.failures,
        error: s.error,
      });
    }
    return out;
  }

  /** Failed calls by dependency and operation, sorted. */
  errors(): ErrorCount[] {
    return [...this.#errors.values()].sort((a, b) =>
      a.dependency === b.dependency
        ? a.operation.localeCompare(b.operation)
        : a.dependency.localeCompare(b.dependency)
    );
  }

  /** Epoch ms of the last answer from `dependency`, if any. */
  lastSuccess(dependency: Dependency): number | undefined {
    return this.#lastSuccess.get(dependency);
  }
}

/** Options of the `instrument*` wrappers. */
export interface InstrumentOptions {
  /** Clock of the deadlines. */
  readonly clock: Clock;
  /** Deadline of one call. */
  readonly timeoutMs: number;
}

/**
 * Runs one call of `operation` under a deadline and reports its outcome.
 * A call cancelled by the caller's own signal reports nothing.
 */
export async function observeCall<T>(
  health: DependencyHealth,
  dependency: Dependency,
  operation: string,
  options: InstrumentOptions,
  signal: AbortSignal | undefined,
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  try {
    const out = await callWithDeadline(
      options.clock,
      options.timeoutMs,
      signal,
      `${operation.replaceAll("_", " ")} (${dependency})`,
      fn,
    );
    health.success(dependency, operation);
    return out;
  } catch (error) {
    if (!(signal?.aborted ?? false)) {
      health.failure(dependency, operation, error);
    }
    throw error;
  }
}

/** Wraps a {@linkcode CoordinationStore}: deadlines and health reports per operation. */
export function instrumentStore(
  store: CoordinationStore,
  health: DependencyHealth,
  options: InstrumentOptions,
): CoordinationStore {
  const call = <T>(
    operation: string,
    signal: AbortSignal | undefined,
    fn: (signal: AbortSignal) => Promise<T>,
  ): Promise<T> =>
    observeCall(health, "dynamodb", operation, options, signal, fn);
  return {
    listLeases: (signal) =>
      call("list_leases", signal, (s) => store.listLeases(s)),
    createLease: (lease, signal) =>
      call("create_lease", signal, (s) => store.createLease(lease, s)),
    takeLease: (shardId, owner, observed, signal) =>
      call(
        "take_lease",
        signal,
        (s) => store.takeLease(shardId, owner, observed, s),
      ),
    renewLease: (fence, checkpoint, signal) =>
      call(
        "renew_lease",
        signal,
        (s) => store.renewLease(fence, checkpoint, s),
      ),
    releaseLease: (fence, checkpoint, signal) =>
      call(
        "release_lease",
        signal,
        (s) => store.releaseLease(fence, checkpoint, s),
      ),
    endLease: (fence, checkpoint, signal) =>
      call("end_lease", signal, (s) => store.endLease(fence, checkpoint, s)),
    commit: (fence, checkpoint, effects, signal) =>
      call(
        "commit",
        signal,
        (s) => store.commit(fence, checkpoint, effects, s),
      ),
  };
}

/** Wraps a {@linkcode StreamSource}: deadlines and health reports per operation. */
export function instrumentSource(
  source: StreamSource,
  health: DependencyHealth,
  options: InstrumentOptions,
): StreamSource {
  return {
    streamArn: source.streamArn,
    describeStream: (input, signal) =>
      observeCall(
        health,
        "streams",
        "describe_stream",
        options,
        signal,
        (s) => source.describeStream(input, s),
      ),
    getShardIterator: (shardId, position, signal) =>
      observeCall(
        health,
        "streams",
        "get_shard_iterator",
        options,
        signal,
        (s) => source.getShardIterator(shardId, position, s),
      ),
    getRecords: (iterator, limit, signal) =>
      observeCall(
        health,
        "streams",
        "get_records",
        options,
        signal,
        (s) => source.getRecords(iterator, limit, s),
      ),
  };
}

/** Wraps a {@linkcode DeadLetterSink} that writes to DynamoDB: deadlines and health reports. */
export function instrumentDeadLetterSink(
  sink: DeadLetterSink,
  health: DependencyHealth,
  options: InstrumentOptions,
): DeadLetterSink {
  return {
    send: (letters, signal) =>
      observeCall(
        health,
        "dynamodb",
        "put_dead_letter",
        options,
        signal,
        (s) => sink.send(letters, s),
      ),
  };
}

/** The logical operations of each dependency, as counted in errors. */
export const DEPENDENCY_OPERATIONS: Readonly<
  Record<Dependency, readonly string[]>
> = {
  dynamodb: [
    "commit",
    "create_lease",
    "describe_table",
    "end_lease",
    "heartbeat",
    "list_leases",
    "put_dead_letter",
    "read_namespace",
    "release_lease",
    "remove_heartbeat",
    "renew_lease",
    "take_lease",
  ],
  streams: ["describe_stream", "get_records", "get_shard_iterator"],
};
