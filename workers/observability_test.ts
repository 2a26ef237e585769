import assert from "node:assert/strict";
import { StreamWorkerError } from "./errors.ts";
import {
  createStreamWorkerMetrics,
  type StreamWorkerEvent,
  type StreamWorkerMetrics,
} from "./metrics.ts";
import {
  createJsonLogger,
  LOG_LEVELS,
  type LogLevel,
  logStreamEvent,
  renderPrometheus,
} from "./observability.ts";

// ---------------------------------------------------------------------------
// A small parser for the Prometheus text format, independent of the renderer.
// ---------------------------------------------------------------------------

interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

interface Family {
  help?: string;
  type?: string;
  readonly samples: Sample[];
}

function unescapeLabel(raw: string): string {
  return raw.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
}

function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let rest = text;
  while (rest.length > 0) {
    const m = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/.exec(rest);
    assert.ok(m, `Cannot parse labels: ${JSON.stringify(text)}`);
    const [whole, key = "", raw = ""] = m;
    labels[key] = unescapeLabel(raw);
    rest = rest.slice(whole.length);
  }
  return labels;
}

function parseValue(raw: string): number {
  if (raw === "+Inf") return Infinity;
  if (raw === "-Inf") return -Infinity;
  if (raw === "NaN") return NaN;
  assert.match(raw, /^-?[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?$/);
  return Number(raw);
}

/** Parses exposition text; asserts HELP and TYPE come once, before the samples, and families are contiguous. */
function parseExposition(text: string): Map<string, Family> {
  assert.ok(text.endsWith("\n"), "output ends with a newline");
  const families = new Map<string, Family>();
  const closed = new Set<string>();
  let current: string | undefined;
  const open = (name: string): Family => {
    if (current !== name) {
      if (current !== undefined) closed.add(current);
      assert.ok(!closed.has(name), `family ${name} is not contiguous`);
      current = name;
    }
    let f = families.get(name);
    if (!f) families.set(name, f = { samples: [] });
    return f;
  };
  for (const line of text.slice(0, -1).split("\n")) {
    assert.notEqual(line, "", "no blank lines");
    let m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (m) {
      const [, name = "", help = ""] = m;
      const f = open(name);
      assert.equal(f.help, undefined, `one HELP for ${name}`);
      assert.equal(f.samples.length, 0, `HELP before samples of ${name}`);
      f.help = help;
      continue;
    }
    m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge)$/.exec(line);
    if (m) {
      const [, name = "", type = ""] = m;
      const f = open(name);
      assert.equal(f.type, undefined, `one TYPE for ${name}`);
      assert.equal(f.samples.length, 0, `TYPE before samples of ${name}`);
      f.type = type;
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `Cannot parse line: ${JSON.stringify(line)}`);
    const [, name = "", labels = "", value = ""] = m;
    open(name).samples.push({
      name,
      labels: parseLabels(labels),
      value: parseValue(value),
    });
  }
  return families;
}

function snake(camel: string): string {
  return camel.split(/(?=[A-Z])/).map((w) => w.toLowerCase()).join("_");
}

const GAUGES = new Set<keyof StreamWorkerMetrics>([
  "leasesHeld",
  "stalledShards",
  "lagMs",
  "lastReadAt",
  "lastCommitAt",
]);

function expectedName(key: keyof StreamWorkerMetrics): string {
  if (key === "lagMs") return "zae_stream_lag_seconds";
  if (key === "lastReadAt") return "zae_stream_seconds_since_last_read";
  if (key === "lastCommitAt") return "zae_stream_seconds_since_last_commit";
  return GAUGES.has(key)
    ? `zae_stream_${snake(key)}`
    : `zae_stream_${snake(key)}_total`;
}

// ---------------------------------------------------------------------------
// renderPrometheus()
// ---------------------------------------------------------------------------

Deno.test("renderPrometheus() exports every metrics field with HELP, TYPE and its value", () => {
  const metrics = createStreamWorkerMetrics();
  const keys = Object.keys(metrics) as (keyof StreamWorkerMetrics)[];
  keys.forEach((key, i) => {
    metrics[key] = (i + 1) * 1000; // distinct, and lagMs/1000 stays an integer
  });
  const now = 1_000_000;
  const families = parseExposition(
    renderPrometheus({ metrics, workerId: "w1", version: "0.10.0", now }),
  );
  keys.forEach((key, i) => {
    const name = expectedName(key);
    const family = families.get(name);
    assert.ok(family, `${key} is exported as ${name}`);
    assert.ok(family.help && family.help.trim().length > 0, `${name} has help`);
    assert.equal(family.type, GAUGES.has(key) ? "gauge" : "counter", name);
    assert.equal(family.samples.length, 1, name);
    const expected = key === "lagMs"
      ? i + 1
      : key === "lastReadAt" || key === "lastCommitAt"
      ? (now - (i + 1) * 1000) / 1000
      : (i + 1) * 1000;
    assert.deepEqual(family.samples[0], { name, labels: {}, value: expected });
  });
  // The metrics plus zae_worker_info, nothing else.
  assert.equal(families.size, keys.length + 1);
});

Deno.test("renderPrometheus() labels each workload's stream metrics and counts dependency errors by operation", () => {
  const aggregator = {
    ...createStreamWorkerMetrics(),
    leasesHeld: 2,
    lastReadAt: 9_000,
  };
  const archiver = { ...createStreamWorkerMetrics(), leasesHeld: 1 };
  const families = parseExposition(renderPrometheus({
    groups: { archiver, aggregator },
    dependencies: {
      errors: [
        { dependency: "dynamodb", operation: "commit", count: 3 },
        { dependency: "streams", operation: "get_records", count: 5 },
      ],
      outages: [{
        dependency: "dynamodb",
        since: 0,
        failedCalls: 3,
        error: new Error("refused"),
      }],
    },
    now: 10_000,
    startedAt: 4_000,
    workerId: "w",
    version: "v",
  }));
  assert.deepEqual(families.get("zae_stream_leases_held")?.samples, [
    {
      name: "zae_stream_leases_held",
      labels: { workload: "aggregator" },
      value: 2,
    },
    {
      name: "zae_stream_leases_held",
      labels: { workload: "archiver" },
      value: 1,
    },
  ]);
  // Since the last read, or since the start before any read.
  assert.deepEqual(
    families.get("zae_stream_seconds_since_last_read")?.samples.map((s) =>
      s.value
    ),
    [1, 6],
  );
  const dynamo = families.get("zae_dynamodb_errors_total");
  assert.equal(dynamo?.type, "counter");
  assert.equal(
    dynamo?.samples.find((s) => s.labels["operation"] === "commit")?.value,
    3,
  );
  // Known operations are exported at 0 before their first failure.
  assert.equal(
    dynamo?.samples.find((s) => s.labels["operation"] === "renew_lease")
      ?.value,
    0,
  );
  assert.equal(
    families.get("zae_streams_errors_total")?.samples.find((s) =>
      s.labels["operation"] === "get_records"
    )?.value,
    5,
  );
  assert.deepEqual(
    families.get("zae_dependency_up")?.samples.map((s) => [
      s.labels["dependency"],
      s.value,
    ]),
    [["dynamodb", 0], ["streams", 1]],
  );
});

Deno.test("renderPrometheus() exports lagMs as seconds", () => {
  const metrics = { ...createStreamWorkerMetrics(), lagMs: 2345 };
  const families = parseExposition(
    renderPrometheus({ metrics, workerId: "w", version: "v" }),
  );
  assert.equal(
    families.get("zae_stream_lag_seconds")?.samples[0]?.value,
    2.345,
  );
  assert.equal(families.get("zae_stream_lag_seconds")?.type, "gauge");
  assert.equal(families.has("zae_stream_lag_ms"), false);
});

Deno.test("renderPrometheus() writes zae_worker_info with escaped label values", () => {
  const workerId = 'host "a"\\b\nc';
  const families = parseExposition(
    renderPrometheus({
      metrics: createStreamWorkerMetrics(),
      workerId,
      version: "0.10.0",
    }),
  );
  const info = families.get("zae_worker_info");
  assert.equal(info?.type, "gauge");
  assert.deepEqual(info?.samples, [{
    name: "zae_worker_info",
    labels: { worker_id: workerId, version: "0.10.0" },
    value: 1,
  }]);
});

Deno.test("renderPrometheus() escapes label values as the format requires", () => {
  const text = renderPrometheus({
    metrics: createStreamWorkerMetrics(),
    workerId: 'a\\b"c\nd',
    version: "v",
  });
  assert.match(
    text,
    /^zae_worker_info\{worker_id="a\\\\b\\"c\\nd",version="v"\} 1$/m,
  );
});

Deno.test("renderPrometheus() groups workload counters by name with a workload label", () => {
  const text = renderPrometheus({
    metrics: createStreamWorkerMetrics(),
    workerId: "w",
    version: "v",
    workloads: {
      archiver: { records_archived_total: 7, zae_batches_written_total: 2 },
      aggregator: { records_archived_total: 3, "snap-shots": 1.5 },
      'we"ird': { records_archived_total: 0 },
    },
  });
  const families = parseExposition(text);
  const archived = families.get("zae_records_archived_total");
  assert.equal(archived?.type, "counter");
  assert.ok(archived?.help);
  assert.deepEqual(archived?.samples.map((s) => [s.labels, s.value]), [
    [{ workload: "aggregator" }, 3],
    [{ workload: "archiver" }, 7],
    [{ workload: 'we"ird' }, 0],
  ]);
  // The prefix is not doubled; invalid characters become "_".
  assert.deepEqual(families.get("zae_batches_written_total")?.samples, [{
    name: "zae_batches_written_total",
    labels: { workload: "archiver" },
    value: 2,
  }]);
  assert.equal(families.get("zae_snap_shots")?.samples[0]?.value, 1.5);
  assert.equal(families.has("zae_zae_batches_written_total"), false);
});

Deno.test("renderPrometheus() never redeclares a built-in family for a workload counter", () => {
  const text = renderPrometheus({
    metrics: { ...createStreamWorkerMetrics(), batches: 4 },
    workerId: "w",
    version: "v",
    workloads: { clash: { stream_batches_total: 9 } },
  });
  const families = parseExposition(text); // asserts one TYPE per family
  assert.deepEqual(families.get("zae_stream_batches_total")?.samples, [{
    name: "zae_stream_batches_total",
    labels: {},
    value: 4,
  }]);
});

Deno.test("renderPrometheus() writes non-finite values in Prometheus spelling", () => {
  const text = renderPrometheus({
    metrics: createStreamWorkerMetrics(),
    workerId: "w",
    version: "v",
    workloads: { x: { a: NaN, b: Infinity, c: -Infinity } },
  });
  assert.match(text, /^zae_a\{workload="x"\} NaN$/m);
  assert.match(text, /^zae_b\{workload="x"\} \+Inf$/m);
  assert.match(text, /^zae_c\{workload="x"\} -Inf$/m);
});

// ---------------------------------------------------------------------------
// createJsonLogger()
// ---------------------------------------------------------------------------

function entryAt(
  list: readonly Record<string, unknown>[],
  index: number,
): Record<string, unknown> {
  const entry = list[index];
  assert.ok(entry, `log line ${index} exists`);
  return entry;
}

function recordingLogger(level?: LogLevel): {
  lines: string[];
  entries(): Record<string, unknown>[];
  log: ReturnType<typeof createJsonLogger>;
} {
  const lines: string[] = [];
  const log = createJsonLogger({
    write: (line) => lines.push(line),
    now: () => Date.UTC(2025, 0, 2, 3, 4, 5, 678),
    logger: "test",
    ...(level ? { level } : {}),
  });
  return {
    lines,
    entries: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>),
    log,
  };
}

Deno.test("createJsonLogger() writes one JSON line per call with the fixed fields first", () => {
  const { lines, entries, log } = recordingLogger();
  log.info("Started", { shardId: "s1", count: 2, nested: { ok: true } });
  log.error("Stopped");
  assert.equal(lines.length, 2);
  for (const line of lines) assert.equal(line.includes("\n"), false);
  assert.deepEqual(entries()[0], {
    timestamp: "2025-01-02T03:04:05.678Z",
    level: "info",
    logger: "test",
    message: "Started",
    shardId: "s1",
    count: 2,
    nested: { ok: true },
  });
  assert.deepEqual(Object.keys(entryAt(entries(), 1)), [
    "timestamp",
    "level",
    "logger",
    "message",
  ]);
});

Deno.test("createJsonLogger() drops lines below the configured level", () => {
  for (const [i, level] of LOG_LEVELS.entries()) {
    const { entries, log } = recordingLogger(level);
    log.debug("d");
    log.info("i");
    log.warn("w");
    log.error("e");
    assert.deepEqual(
      entries().map((e) => e.level),
      LOG_LEVELS.slice(i),
      `level ${level}`,
    );
  }
  const { lines, log } = recordingLogger();
  log.debug("hidden by the default level");
  assert.equal(lines.length, 0);
});

Deno.test("createJsonLogger() rejects an unknown level", () => {
  assert.throws(
    () => createJsonLogger({ level: "verbose" as LogLevel }),
    { name: "RangeError" },
  );
});

Deno.test("createJsonLogger() serialises errors with name, message, code, stack and cause", () => {
  const { entries, log } = recordingLogger();
  const cause = new TypeError("socket closed");
  log.warn("Cannot read shard", {
    error: new StreamWorkerError("STREAM_UNAVAILABLE", "Cannot read shard", {
      cause,
    }),
    plain: new RangeError("out of range"),
    list: [new Error("in an array")],
  });
  const entry = entryAt(entries(), 0);
  const error = entry.error as Record<string, unknown>;
  assert.equal(error.name, "StreamWorkerError");
  assert.equal(error.message, "Cannot read shard");
  assert.equal(error.code, "STREAM_UNAVAILABLE");
  assert.equal(typeof error.stack, "string");
  assert.deepEqual(
    { ...(error.cause as object), stack: undefined },
    { name: "TypeError", message: "socket closed", stack: undefined },
  );
  const plain = entry.plain as Record<string, unknown>;
  assert.equal(plain.name, "RangeError");
  assert.equal("code" in plain, false);
  assert.equal(
    ((entry.list as unknown[])[0] as Record<string, unknown>).message,
    "in an array",
  );
});

Deno.test("createJsonLogger() writes bigints as strings and omits undefined fields", () => {
  const { entries, log } = recordingLogger();
  log.info("m", { big: 12345678901234567890n, gone: undefined, n: null });
  assert.deepEqual(entries()[0], {
    timestamp: "2025-01-02T03:04:05.678Z",
    level: "info",
    logger: "test",
    message: "m",
    big: "12345678901234567890",
    n: null,
  });
});

Deno.test("createJsonLogger() never throws on circular or unserialisable data", () => {
  const { lines, entries, log } = recordingLogger();
  const loop: Record<string, unknown> = { name: "loop" };
  loop.self = loop;
  const selfCaused = new Error("again");
  (selfCaused as { cause?: unknown }).cause = selfCaused;
  const shared = { x: 1 };
  const hostile = {
    toJSON(): never {
      throw new Error("no JSON for you");
    },
  };
  log.error("Weird data", {
    loop,
    selfCaused,
    shared: [shared, shared],
    hostile,
    ok: 1,
  });
  assert.equal(lines.length, 1);
  const entry = entryAt(entries(), 0);
  assert.deepEqual(entry.loop, { name: "loop", self: "[Circular]" });
  assert.equal(
    (entry.selfCaused as Record<string, unknown>).cause,
    "[Circular]",
  );
  assert.deepEqual(entry.shared, [{ x: 1 }, { x: 1 }]); // shared is not circular
  assert.equal(typeof entry.hostile, "string");
  assert.match(entry.hostile as string, /Unserializable/);
  assert.equal(entry.ok, 1);
});

Deno.test("createJsonLogger() keeps the fixed fields when a field has the same name", () => {
  const { entries, log } = recordingLogger();
  log.info("real", { message: "fake", level: "error" });
  const entry = entryAt(entries(), 0);
  assert.equal(entry.message, "real");
  assert.equal(entry.level, "info");
  assert.equal(entry["fields.message"], "fake");
  assert.equal(entry["fields.level"], "error");
});

// ---------------------------------------------------------------------------
// logStreamEvent()
// ---------------------------------------------------------------------------

const EVENTS: readonly (readonly [StreamWorkerEvent, LogLevel])[] = [
  [{ kind: "lease_taken", shardId: "s1", epoch: 3, reason: "free" }, "info"],
  [{
    kind: "lease_taken",
    shardId: "s1",
    epoch: 4,
    reason: "rebalance",
    from: "w2",
  }, "info"],
  [{
    kind: "lease_taken",
    shardId: "s1",
    epoch: 5,
    reason: "expired",
    from: "w3",
  }, "info"],
  [{ kind: "lease_released", shardId: "s1" }, "info"],
  [{ kind: "shard_ended", shardId: "s1", children: ["s2", "s3"] }, "info"],
  [{ kind: "lease_lost", shardId: "s1" }, "warn"],
  [{ kind: "lease_lost", shardId: "s1", owner: "w2" }, "warn"],
  [{ kind: "lease_expired", shardId: "s1", unrenewedMs: 10_500 }, "warn"],
  [{ kind: "throttled", shardId: "s1", delayMs: 200 }, "warn"],
  [{ kind: "throttled", delayMs: 100 }, "warn"],
  [
    { kind: "iterator_expired", shardId: "s1", afterSequenceNumber: "100" },
    "warn",
  ],
  [
    { kind: "error", shardId: "s1", error: new Error("renewal failed") },
    "warn",
  ],
  [
    {
      kind: "error",
      shardId: "s1",
      error: new Error("no answer"),
      failure: "unreachable",
    },
    "debug",
  ],
  [
    {
      kind: "error",
      error: new Error("access denied"),
      failure: "fatal",
    },
    "error",
  ],
  [{
    kind: "dead_letter",
    shardId: "s1",
    sequenceNumber: "200",
    reason: "invalid_record",
    key: { PK: "ns/BUCKET#e#r#0", SK: "#STATE" },
    error: new Error('attribute "b_rpm_tc" is a string'),
  }, "error"],
  [{
    kind: "data_loss",
    shardId: "s1",
    afterSequenceNumber: "300",
    action: "stalled",
    error: new StreamWorkerError("STREAM_DATA_TRIMMED", "trimmed"),
  }, "error"],
  [{
    kind: "data_loss",
    shardId: "s1",
    action: "skipped_to_trim_horizon",
    error: new StreamWorkerError("STREAM_DATA_TRIMMED", "trimmed"),
  }, "error"],
];

Deno.test("logStreamEvent() logs each event kind at its level with the event fields", () => {
  for (const [event, level] of EVENTS) {
    const { entries, log } = recordingLogger("debug");
    logStreamEvent(log, event);
    const list = entries();
    assert.equal(list.length, 1, event.kind);
    const entry = entryAt(list, 0);
    assert.equal(entry.level, level, event.kind);
    assert.equal(entry.event, event.kind);
    assert.equal(typeof entry.message, "string");
    assert.ok((entry.message as string).length > 0);
    for (const [key, value] of Object.entries(event)) {
      if (key === "kind") continue;
      if (value instanceof Error) {
        assert.equal(
          (entry[key] as Record<string, unknown>).message,
          value.message,
          `${event.kind}.${key}`,
        );
      } else {
        assert.deepEqual(entry[key], value, `${event.kind}.${key}`);
      }
    }
  }
});

Deno.test("logStreamEvent() covers every event kind", () => {
  const kinds = new Set([...EVENTS.map(([e]) => e.kind), "dependency"]);
  const all: Record<StreamWorkerEvent["kind"], true> = {
    "lease_taken": true,
    "lease_lost": true,
    "lease_expired": true,
    "dependency": true,
    "lease_released": true,
    "shard_ended": true,
    "data_loss": true,
    "dead_letter": true,
    "iterator_expired": true,
    "throttled": true,
    "error": true,
  };
  assert.deepEqual([...kinds].sort(), Object.keys(all).sort());
});

Deno.test("logStreamEvent() says that records were lost and what to do on data loss", () => {
  for (const action of ["stalled", "skipped_to_trim_horizon"] as const) {
    const { entries, log } = recordingLogger();
    logStreamEvent(log, {
      kind: "data_loss",
      shardId: "s9",
      action,
      error: new StreamWorkerError("STREAM_DATA_TRIMMED", "trimmed"),
    });
    const entry = entryAt(entries(), 0);
    assert.equal(entry.level, "error");
    assert.equal(entry.action, action);
    assert.equal(
      (entry.error as Record<string, unknown>).code,
      "STREAM_DATA_TRIMMED",
    );
    assert.match(entry.message as string, /records were lost/i);
    assert.match(entry.message as string, /reconcile/);
  }
});
