/**
 * Telemetry of the limiter through `@opentelemetry/api`: decision counters,
 * decision latency, DynamoDB calls per decision and a span per acquire. It
 * is a no-op unless the application installs an OpenTelemetry SDK (or passes
 * providers) before creating the {@linkcode RateLimiter}: with the API's
 * no-op providers nothing is created per call.
 *
 * @module
 */
import {
  type Attributes,
  type Counter,
  createNoopMeter,
  type Histogram,
  type MeterProvider,
  metrics,
  ProxyTracerProvider,
  type Span,
  SpanStatusCode,
  trace,
  type Tracer,
  type TracerProvider,
} from "@opentelemetry/api";
import { AsyncLocalStorage } from "node:async_hooks";
import { RateLimitExceeded } from "./errors.ts";
import type { Lease } from "./lease.ts";

/** An OpenTelemetry `MeterProvider` (from `@opentelemetry/api`), structurally. */
export interface MeterProviderLike {
  /** Returns a `Meter`. */
  getMeter(name: string): object;
}

/** An OpenTelemetry `TracerProvider` (from `@opentelemetry/api`), structurally. */
export interface TracerProviderLike {
  /** Returns a `Tracer`. */
  getTracer(name: string): object;
}

/** Instrumentation scope name of the library's meter and tracer. */
export const TELEMETRY_SCOPE = "zae-limiter";

/** The outcome of one acquire decision. */
export type DecisionOutcome =
  | "admitted"
  | "refused"
  | "failed_open"
  | "error"
  | "local";
const DECISION_OUTCOMES: readonly DecisionOutcome[] = [
  "admitted",
  "refused",
  "failed_open",
  "error",
  "local",
];

/** The way a decision was reached. */
export type DecisionPath = "warm" | "slow" | "retry" | "cached" | "reserve";

/** Options of the limiter's telemetry. */
export interface TelemetryOptions {
  /** Meter provider. @default the global one (`metrics.getMeterProvider()`) */
  readonly meterProvider?: MeterProviderLike;
  /** Tracer provider. @default the global one (`trace.getTracerProvider()`) */
  readonly tracerProvider?: TracerProviderLike;
  /**
   * Add the entity id as attribute `zae_limiter.entity_id` (unbounded
   * cardinality: for debugging only). @default false
   */
  readonly entityIdAttribute?: boolean;
}

/** Per-decision state, only while telemetry is on. */
interface DecisionScope {
  calls: number;
  path: DecisionPath | null;
}

const scope = new AsyncLocalStorage<DecisionScope>();
/** Number of live telemetry instances that record: 0 keeps every hook to one branch. */
let recording = 0;

/** Marks the path of the decision in progress (no-op without telemetry). */
export function markPath(path: DecisionPath): void {
  if (recording === 0) return;
  const s = scope.getStore();
  if (s) s.path = path;
}

/** Wraps a `send` so each DynamoDB command of a decision is counted (no-op without telemetry). */
export function countingSend<C, O, R>(
  send: (command: C, options?: O) => R,
): (command: C, options?: O) => R {
  return (command, options) => {
    if (recording !== 0) {
      const s = scope.getStore();
      if (s) s.calls++;
    }
    return send(command, options);
  };
}

const NOOP_METER_CLASS = createNoopMeter().constructor;
const NOOP_TRACER_CLASS = new ProxyTracerProvider().getDelegate().getTracer(
  TELEMETRY_SCOPE,
).constructor;

function realTracer(provider: TracerProvider): Tracer | null {
  const p = provider instanceof ProxyTracerProvider
    ? provider.getDelegate()
    : provider;
  const t = p.getTracer(TELEMETRY_SCOPE);
  return t.constructor === NOOP_TRACER_CLASS ? null : t;
}

const OUTCOME_INDEX: Readonly<Record<DecisionOutcome, number>> = {
  admitted: 0,
  refused: 1,
  "failed_open": 2,
  error: 3,
  local: 4,
};

/** Latency buckets in seconds (1 ms … 5 s). */
const LATENCY_BUCKETS = [
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
];
const CALL_BUCKETS = [0, 1, 2, 3, 4, 6, 8, 12, 16];
/** Bound of the attribute cache (resources × limit names). */
const MAX_CACHED = 10_000;

/** What the telemetry needs to know about the acquire. */
interface AcquireLike {
  readonly entityId: string;
  readonly resource: string;
  readonly consume: Readonly<Record<string, number>>;
}

/**
 * The limiter's instruments, created once per limiter. `on` is false when no
 * SDK is installed; the limiter then calls nothing here.
 */
export class LimiterTelemetry {
  /** Whether any instrument records; false with the API's no-op providers. */
  readonly on: boolean;
  readonly #namespace: string;
  readonly #report: (error: unknown, context: string) => void;
  readonly #entityIds: boolean;
  readonly #decisions: Counter | null = null;
  readonly #shadow: Counter | null = null;
  readonly #latency: Histogram | null = null;
  readonly #calls: Histogram | null = null;
  readonly #tracer: Tracer | null;
  /** resource → limit name → attributes per outcome index. */
  readonly #attrs = new Map<string, Map<string, Attributes[]>>();
  /** resource → attributes of the histograms. */
  readonly #resourceAttrs = new Map<string, Attributes>();
  #cached = 0;

  /**
   * Creates the instruments (none when the providers are no-ops). `report`
   * learns what an instrument threw while recording a decision (a custom
   * meter, a span processor whose exporter throws): recording never changes
   * the decision's answer.
   */
  constructor(
    namespace: string,
    options: TelemetryOptions = {},
    report: (error: unknown, context: string) => void = () => {},
  ) {
    this.#namespace = namespace;
    this.#report = report;
    this.#entityIds = options.entityIdAttribute ?? false;
    const meter =
      ((options.meterProvider ?? metrics.getMeterProvider()) as MeterProvider)
        .getMeter(TELEMETRY_SCOPE);
    const metered = meter.constructor !== NOOP_METER_CLASS;
    this.#tracer = realTracer(
      (options.tracerProvider ?? trace.getTracerProvider()) as TracerProvider,
    );
    if (metered) {
      this.#decisions = meter.createCounter("zae_limiter.decisions", {
        description:
          "Acquire decisions per limit named in `consume`, by outcome (admitted, refused, failed_open, error, local).",
        unit: "{decision}",
      });
      this.#shadow = meter.createCounter("zae_limiter.shadow.decisions", {
        description:
          "Shadow-mode decisions of admitted acquires per shadow limit consumed, by outcome (would_admit, would_refuse); shadow limits never refuse.",
        unit: "{decision}",
      });
      this.#latency = meter.createHistogram("zae_limiter.decision.duration", {
        description:
          "Time from acquire to the admission decision (the callback body is not included).",
        unit: "s",
        advice: { explicitBucketBoundaries: LATENCY_BUCKETS },
      });
      this.#calls = meter.createHistogram(
        "zae_limiter.decision.dynamodb_calls",
        {
          description:
            "DynamoDB commands sent for one acquire decision (a warm acquire sends one).",
          unit: "{call}",
          advice: { explicitBucketBoundaries: CALL_BUCKETS },
        },
      );
    }
    this.on = metered || this.#tracer !== null;
    if (this.on) recording++;
  }

  /** Runs a decision with the instruments (only called when {@linkcode on}). */
  observe(o: AcquireLike, decide: () => Promise<Lease>): Promise<Lease> {
    const s: DecisionScope = { calls: 0, path: null };
    const start = performance.now();
    const span = this.#guarded(() =>
      this.#tracer?.startSpan("zae_limiter.acquire", {
        attributes: {
          "zae_limiter.resource": String(o.resource),
          "zae_limiter.namespace": this.#namespace,
        },
      })
    );
    return scope.run(s, async () => {
      let lease: Lease;
      try {
        lease = await decide();
      } catch (e) {
        const outcome = e instanceof RateLimitExceeded ? "refused" : "error";
        if (outcome === "refused" && s.calls === 0 && s.path === null) {
          s.path = "cached";
        }
        this.#guarded(() => this.#record(o, outcome, s, start, span, null, e));
        throw e;
      }
      // The lease is granted (charged, slots held): it reaches the caller whatever recording does.
      const outcome = lease.local
        ? "local"
        : lease.unchecked
        ? "failed_open"
        : "admitted";
      this.#guarded(() => this.#record(o, outcome, s, start, span, lease));
      return lease;
    });
  }

  /** `fn`'s result, or `undefined` (reported) when an instrument threw. */
  #guarded<T>(fn: () => T): T | undefined {
    try {
      return fn();
    } catch (e) {
      this.#report(e, "telemetry");
      return undefined;
    }
  }

  #record(
    o: AcquireLike,
    outcome: DecisionOutcome,
    s: DecisionScope,
    start: number,
    span: Span | undefined,
    lease: Lease | null,
    error?: unknown,
  ): void {
    const seconds = (performance.now() - start) / 1000;
    const path = s.path ?? (outcome === "admitted" ? "warm" : null);
    const resource = typeof o.resource === "string" ? o.resource : "";
    if (this.#decisions) {
      const i = OUTCOME_INDEX[outcome];
      const names = o.consume && typeof o.consume === "object"
        ? Object.keys(o.consume)
        : [];
      for (const name of names) {
        let a = this.#limitAttrs(resource, name)[i] as Attributes;
        if (this.#entityIds) {
          a = { ...a, "zae_limiter.entity_id": String(o.entityId) };
        }
        this.#decisions.add(1, a);
      }
      if (lease && this.#shadow) {
        for (const st of lease.shadow.checked) {
          this.#shadow.add(1, {
            "zae_limiter.limit": st.limitName,
            "zae_limiter.resource": resource,
            "zae_limiter.namespace": this.#namespace,
            "zae_limiter.outcome": st.exceeded ? "would_refuse" : "would_admit",
          });
        }
      }
      let h = this.#histAttrs(resource);
      if (this.#entityIds) {
        h = { ...h, "zae_limiter.entity_id": String(o.entityId) };
      }
      this.#latency?.record(seconds, h);
      this.#calls?.record(s.calls, h);
    }
    if (span) {
      span.setAttribute("zae_limiter.outcome", outcome);
      if (path) span.setAttribute("zae_limiter.path", path);
      span.setAttribute("zae_limiter.dynamodb_calls", s.calls);
      if (lease) {
        span.setAttribute(
          "zae_limiter.cascade",
          lease.entries.some((e) => e.ref.entityId !== lease.entityId),
        );
      }
      if (lease && lease.shadow.refused.length > 0) {
        span.setAttribute(
          "zae_limiter.shadow_refused",
          lease.shadow.refused.map((st) => st.limitName).join(","),
        );
      }
      if (outcome === "error") {
        span.setStatus({
          code: SpanStatusCode.ERROR,
          message: error instanceof Error ? error.message : String(error),
        });
      }
      span.end();
    }
  }

  #limitAttrs(resource: string, name: string): Attributes[] {
    let byName = this.#attrs.get(resource);
    let list = byName?.get(name);
    if (list) return list;
    list = DECISION_OUTCOMES.map((outcome) => ({
      "zae_limiter.limit": name,
      "zae_limiter.resource": resource,
      "zae_limiter.namespace": this.#namespace,
      "zae_limiter.outcome": outcome,
    }));
    if (this.#cached < MAX_CACHED) {
      if (!byName) this.#attrs.set(resource, byName = new Map());
      byName.set(name, list);
      this.#cached++;
    }
    return list;
  }

  #histAttrs(resource: string): Attributes {
    let a = this.#resourceAttrs.get(resource);
    if (a) return a;
    a = {
      "zae_limiter.resource": resource,
      "zae_limiter.namespace": this.#namespace,
    };
    if (this.#resourceAttrs.size < MAX_CACHED) {
      this.#resourceAttrs.set(resource, a);
    }
    return a;
  }
}
