import assert from "node:assert/strict";
import { createWorld, startWorker } from "./_test_support.ts";
import { createStreamWorkerMetrics } from "./metrics.ts";
import { createWorkerRegistry } from "./prometheus.ts";

/**
 * Checks the text exposition format 0.0.4 line by line, the way
 * `promtool check metrics` does for structure: every line is a HELP, a TYPE
 * or a sample; each family has one HELP and one TYPE, before its samples;
 * samples of a family are contiguous; histogram samples are `_bucket` (with
 * `le`, cumulative, ending with `+Inf`), `_sum` and `_count`.
 * @returns the samples by family name
 */
function parseExposition(
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

function sampleValue(text: string, line: RegExp): number {
  const m = line.exec(text);
  assert.ok(m, `no sample ${line}`);
  return Number(m[1]);
}

Deno.test("createWorkerRegistry(): the exposition parses line by line, keeps the existing families, adds histograms and process metrics with real HELP texts", async () => {
  const r = createWorkerRegistry();
  r.observeBatch({ workload: "aggregator", durationMs: 30, records: 7 });
  const text = await r.render({
    groups: {
      aggregator: { ...createStreamWorkerMetrics(), recordsRead: 7 },
      archiver: createStreamWorkerMetrics(),
    },
    dependencies: {
      errors: [{ dependency: "dynamodb", operation: "GetItem", count: 2 }],
      outages: [],
    },
    workerId: "w1",
    version: "0.10.0",
    workloads: { aggregator: { aggregator_acquires_total: 2 } },
  });
  const families = parseExposition(text);
  for (
    const [fam, type] of [
      ["zae_worker_info", "gauge"],
      ["zae_stream_records_read_total", "counter"],
      ["zae_stream_lag_seconds", "gauge"],
      ["zae_dynamodb_errors_total", "counter"],
      ["zae_streams_errors_total", "counter"],
      ["zae_dependency_up", "gauge"],
      ["zae_aggregator_acquires_total", "counter"],
      ["zae_stream_batch_duration_seconds", "histogram"],
      ["zae_stream_batch_records", "histogram"],
      ["zae_stream_commit_duration_seconds", "histogram"],
      ["zae_stream_end_to_end_lag_seconds", "histogram"],
      ["process_cpu_seconds_total", "counter"],
      ["process_resident_memory_bytes", "gauge"],
    ] as const
  ) {
    assert.equal(families.get(fam)?.type, type, fam);
  }
  assert.match(
    text,
    /^zae_stream_records_read_total\{workload="aggregator"\} 7$/m,
  );
  assert.match(
    text,
    /^zae_dynamodb_errors_total\{operation="GetItem"\} 2$/m,
  );
  assert.match(
    text,
    /^zae_stream_batch_records_bucket\{le="10",workload="aggregator"\} 1$/m,
  );
  for (const [fam, f] of families) {
    if (fam.startsWith("zae_")) {
      assert.doesNotMatch(
        f.help,
        /^(Workload counter|Counter \S+ reported by a custom|TODO|help)/i,
        fam,
      );
    }
  }
});

Deno.test("createWorkerRegistry(): a stream worker's batches and commits move the histograms", async () => {
  const world = createWorld();
  world.stream.addShard("s0");
  for (let i = 0; i < 3; i++) world.stream.put("s0", { pk: `ns/ENTITY#e${i}` });
  const r = createWorkerRegistry({ defaultMetrics: false });
  const render = () => r.render({ workerId: "w", version: "0" });
  assert.doesNotMatch(
    await render(),
    /^zae_stream_batch_duration_seconds_count/m,
    "no batch before the worker ran",
  );
  const w = startWorker(world, "w", {
    batchSize: 10,
    onBatch: (b) => r.observeBatch(b),
    onCommit: (c) => r.observeCommit(c),
  });
  await world.clock.runUntil(() => world.handled.length >= 3);
  assert.equal((await w.stop()).ok, true);
  const after = await render();
  parseExposition(after);
  const batches = sampleValue(
    after,
    /^zae_stream_batch_duration_seconds_count (\S+)$/m,
  );
  assert.ok(batches >= 1, `batches observed: ${batches}`);
  assert.equal(
    sampleValue(after, /^zae_stream_batch_records_sum (\S+)$/m),
    3,
  );
  assert.ok(
    sampleValue(after, /^zae_stream_commit_duration_seconds_count (\S+)$/m) >=
      1,
  );
  assert.equal(
    sampleValue(after, /^zae_stream_end_to_end_lag_seconds_count (\S+)$/m),
    batches,
  );
});
