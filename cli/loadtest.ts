/**
 * `loadtest`: drives acquires against a deployed table (or DynamoDB Local)
 * from this process and reports decisions per second, latency percentiles,
 * refusals and DynamoDB calls per decision (spec F-054). The reference
 * deploys a Locust harness on Fargate and Lambda; this measures what one
 * client process sees, which is what a capacity plan per instance needs.
 *
 * @module
 */
import type { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { Command, InvalidArgumentError, Option } from "commander";
import {
  type Limit,
  RateLimiter,
  RateLimitExceeded,
  Repository,
} from "../mod.ts";
import { validateLimitName, validateResource } from "../core/validation.ts";
import {
  action,
  type CliContext,
  CliExit,
  CliUsageError,
  dynamoClient,
  EXIT,
  type GlobalConfig,
  intInRange,
  limitOption,
  readVersionState,
  renderTable,
  resolveGlobals,
  thousands,
} from "./_context.ts";
import { startProgress } from "./_progress.ts";
import { formatLimit } from "./limit_spec.ts";

/** Latency and outcome figures of a run. */
export interface LoadReport {
  /** Table. */
  readonly table: string;
  /** Namespace. */
  readonly namespace: string;
  /** Resource. */
  readonly resource: string;
  /** Entities driven. */
  readonly entities: number;
  /** Concurrent acquires. */
  readonly concurrency: number;
  /** Seconds asked for. */
  readonly durationSeconds: number;
  /** Seconds measured (shorter when interrupted). */
  readonly elapsedSeconds: number;
  /** Whether Ctrl-C ended the run early. */
  readonly interrupted: boolean;
  /** Acquires that returned a decision or failed. */
  readonly decisions: number;
  /** Decisions per second. */
  readonly decisionsPerSecond: number;
  /** Admitted acquires. */
  readonly admitted: number;
  /** Refused acquires (RateLimitExceeded). */
  readonly refused: number;
  /** Acquires that failed with another error. */
  readonly errors: number;
  /** Those errors by name. */
  readonly errorsByName: Readonly<Record<string, number>>;
  /** Latency of a decision in milliseconds. */
  readonly latencyMs: {
    readonly mean: number;
    readonly p50: number;
    readonly p95: number;
    readonly p99: number;
    readonly max: number;
  };
  /** DynamoDB requests during the measured window. */
  readonly dynamodb: {
    /** Commands sent. */
    readonly calls: number;
    /** HTTP attempts (commands plus SDK retries). */
    readonly attempts: number;
    /** Commands per decision. */
    readonly callsPerDecision: number;
    /** Commands by name. */
    readonly byCommand: Readonly<Record<string, number>>;
  };
}

/**
 * The value at fraction `p` of sorted samples (nearest rank; `0` for none).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { percentile } from "./loadtest.ts";
 *
 * const s = Float64Array.from({ length: 100 }, (_, i) => i + 1);
 * assert.deepEqual([percentile(s, 0.5), percentile(s, 0.95), percentile(s, 0.99), percentile(s, 1)], [50, 95, 99, 100]);
 * ```
 */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.min(
    sorted.length,
    Math.max(1, Math.ceil(p * sorted.length)),
  );
  return sorted[rank - 1] as number;
}

/**
 * Parses `--consume rpm=1,tpm=500` (repeatable; whole tokens).
 *
 * @throws {InvalidArgumentError} naming the bad part
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseConsume } from "./loadtest.ts";
 *
 * assert.deepEqual(parseConsume("rpm=1,tpm=500", undefined), { rpm: 1, tpm: 500 });
 * assert.throws(() => parseConsume("rpm", undefined), /Invalid --consume "rpm"/);
 * ```
 */
export function parseConsume(
  value: string,
  previous: Record<string, number> | undefined,
): Record<string, number> {
  const out = { ...previous };
  for (const part of value.split(",")) {
    const m = /^([^=]+)=(\d+)$/.exec(part.trim());
    if (!m) {
      throw new InvalidArgumentError(
        `Invalid --consume "${part}": use name=amount, e.g. rpm=1,tpm=500`,
      );
    }
    const name = m[1] as string;
    try {
      validateLimitName(name, "consume");
    } catch (e) {
      throw new InvalidArgumentError(
        e instanceof Error ? e.message : String(e),
      );
    }
    out[name] = Number(m[2]);
  }
  return out;
}

/** A growable array of latencies. */
class Samples {
  #data = new Float64Array(4096);
  #n = 0;
  push(v: number): void {
    if (this.#n === this.#data.length) {
      const next = new Float64Array(this.#data.length * 2);
      next.set(this.#data);
      this.#data = next;
    }
    this.#data[this.#n++] = v;
  }
  sorted(): Float64Array {
    return this.#data.slice(0, this.#n).sort();
  }
}

interface CallCounts {
  calls: number;
  attempts: number;
  readonly byCommand: Map<string, number>;
  counting: boolean;
}

/** Counts commands and HTTP attempts on the client while `counting` is on. */
function countCalls(client: DynamoDBClient): CallCounts {
  const c: CallCounts = {
    calls: 0,
    attempts: 0,
    byCommand: new Map(),
    counting: false,
  };
  client.middlewareStack.add(
    (next, context) => (args) => {
      if (c.counting) {
        c.calls++;
        const name = String(context.commandName ?? "unknown");
        c.byCommand.set(name, (c.byCommand.get(name) ?? 0) + 1);
      }
      return next(args);
    },
    { step: "initialize", name: "zaelLoadtestCalls" },
  );
  client.middlewareStack.add(
    (next) => (args) => {
      if (c.counting) c.attempts++;
      return next(args);
    },
    { step: "finalizeRequest", priority: "low", name: "zaelLoadtestAttempts" },
  );
  return c;
}

async function open(
  ctx: CliContext,
  g: GlobalConfig,
): Promise<{ repo: Repository; counts: CallCounts }> {
  const client = dynamoClient(ctx, g);
  const counts = countCalls(client);
  const vs = await readVersionState(client, g.name);
  if (vs.kind !== "record") {
    throw new CliExit(
      EXIT.FAILURE,
      `Cannot load-test table '${g.name}': ${
        vs.kind === "no-table"
          ? "it does not exist (run 'zae-limiter deploy', or 'zae-limiter local up' for DynamoDB Local)"
          : vs.kind === "legacy"
          ? "it uses the pre-0.10 key layout"
          : "it has no version record (run 'zae-limiter deploy')"
      }`,
    );
  }
  const repo = await Repository.open({
    client,
    stack: g.name,
    namespace: g.namespace,
    provision: false,
    registerNamespace: false,
  });
  return { repo, counts };
}

interface LoadFlags {
  readonly entities: number;
  readonly concurrency: number;
  readonly duration: number;
  readonly resource: string;
  readonly limit?: Limit[];
  readonly consume?: Record<string, number>;
  readonly entityPrefix: string;
  readonly warmup: number;
  readonly cleanup: boolean;
}

function resourceArg(value: string): string {
  try {
    return validateResource(value);
  } catch (e) {
    throw new InvalidArgumentError(e instanceof Error ? e.message : String(e));
  }
}

function ms(n: number): string {
  return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

function printReport(ctx: CliContext, r: LoadReport, limits: Limit[]): void {
  ctx.io.out(
    `Load test of table '${r.table}', namespace '${r.namespace}', resource '${r.resource}': ${r.entities} entities, concurrency ${r.concurrency}, ${
      r.elapsedSeconds.toFixed(1)
    } s${r.interrupted ? " (interrupted)" : ""}`,
  );
  ctx.io.out(`Limits: ${limits.map(formatLimit).join("; ")}`);
  const pct = (n: number) =>
    r.decisions > 0 ? ` (${(n / r.decisions * 100).toFixed(1)}%)` : "";
  const rows: [string, string][] = [
    ["Decisions", thousands(r.decisions)],
    ["Decisions/s", r.decisionsPerSecond.toFixed(1)],
    ["Admitted", `${thousands(r.admitted)}${pct(r.admitted)}`],
    ["Refused (rate limited)", `${thousands(r.refused)}${pct(r.refused)}`],
    ["Errors", `${thousands(r.errors)}${pct(r.errors)}`],
    [
      "Latency p50 / p95 / p99",
      `${ms(r.latencyMs.p50)} / ${ms(r.latencyMs.p95)} / ${
        ms(r.latencyMs.p99)
      } ms`,
    ],
    [
      "Latency mean / max",
      `${ms(r.latencyMs.mean)} / ${ms(r.latencyMs.max)} ms`,
    ],
    ["DynamoDB calls", thousands(r.dynamodb.calls)],
    ["DynamoDB calls / decision", r.dynamodb.callsPerDecision.toFixed(2)],
    [
      "SDK retries",
      thousands(Math.max(0, r.dynamodb.attempts - r.dynamodb.calls)),
    ],
  ];
  ctx.io.out(renderTable(["Metric", "Value"], rows, { rightAlign: [1] }));
  const byCommand = Object.entries(r.dynamodb.byCommand).sort((a, b) =>
    b[1] - a[1]
  );
  if (byCommand.length > 0) {
    ctx.io.out(renderTable(
      ["DynamoDB command", "Calls", "Per decision"],
      byCommand.map(([name, n]) => [
        name,
        thousands(n),
        (r.decisions > 0 ? n / r.decisions : 0).toFixed(3),
      ]),
      { rightAlign: [1, 2] },
    ));
  }
  for (const [name, n] of Object.entries(r.errorsByName)) {
    ctx.io.err(`Errors: ${thousands(n)} × ${name}`);
  }
}

function loadLimitOption(): Option {
  const o = limitOption().makeOptionMandatory(false);
  o.description =
    `limits for this run only (default: the stored ones): ${o.description}`;
  return o;
}

/** The `loadtest` command. */
export function makeLoadtestCommand(ctx: CliContext): Command {
  return new Command("loadtest")
    .description(
      "Drive acquires against the table (--name; or DynamoDB Local) and report decisions/s, latency, refusals and DynamoDB calls",
    )
    .addOption(
      new Option("--entities <n>", "entities to spread the acquires over")
        .argParser(intInRange(1, 1_000_000)).default(100),
    )
    .addOption(
      new Option("--concurrency <n>", "acquires in flight at once")
        .argParser(intInRange(1, 1000)).default(8),
    )
    .addOption(
      new Option("--duration <seconds>", "how long to measure")
        .argParser(intInRange(1, 3600)).default(10),
    )
    .addOption(
      new Option("--warmup <seconds>", "run this long first without measuring")
        .argParser(intInRange(0, 600)).default(0),
    )
    .addOption(
      new Option("-r, --resource <resource>", "resource to acquire")
        .argParser(resourceArg).default("loadtest"),
    )
    .addOption(loadLimitOption())
    .addOption(
      new Option(
        "--consume <name=amount,...>",
        "tokens per acquire (default: 1 of each limit); repeatable",
      ).argParser(parseConsume),
    )
    .addOption(
      new Option("--entity-prefix <prefix>", "entity ids are {prefix}{0..n-1}")
        .default("loadtest-"),
    )
    .option(
      "--no-cleanup",
      "keep the buckets of the load-test entities (default: delete them after the run)",
    )
    .addHelpText(
      "after",
      `
Without -l the acquires use the limits stored for the resource (entity, resource or system
defaults); with -l they use those limits for this run only and store nothing. Entities are not
created; their buckets are deleted after the run unless --no-cleanup. Ctrl-C ends the run early
and still reports. Exit 0, or 1 when any acquire failed with an error (refusals are not errors).

Examples:
  zae-limiter local up && zae-limiter loadtest --entities 50 --concurrency 16 --duration 20 -l rpm:6000/min
  zae-limiter --name prod-limiter -N tenant-a --output json loadtest --duration 60`,
    )
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const o = cmd.opts<LoadFlags>();
      const json = g.output === "json";
      const ids = Array.from(
        { length: o.entities },
        (_, i) => `${o.entityPrefix}${i}`,
      );
      const { repo, counts } = await open(ctx, g);
      let limits: Limit[];
      if (o.limit && o.limit.length > 0) {
        limits = o.limit;
      } else {
        const resolved = await repo.resolveLimits(ids[0] as string, o.resource);
        if (!resolved) {
          throw new CliUsageError(
            `No limits for resource '${o.resource}' in namespace '${g.namespace}': pass -l (e.g. -l rpm:6000/min, for this run only) or store defaults ('zae-limiter resource set-defaults ${o.resource} -l ...')`,
          );
        }
        limits = [...resolved.limits];
      }
      const consume = o.consume ??
        Object.fromEntries(limits.map((l) => [l.name, 1]));
      for (const [name, amount] of Object.entries(consume)) {
        const l = limits.find((x) => x.name === name);
        if (!l) {
          throw new CliUsageError(
            `Invalid --consume "${name}": no such limit (the limits are ${
              limits.map((x) => x.name).join(", ")
            })`,
          );
        }
        if (amount > l.capacity) {
          throw new CliUsageError(
            `Invalid --consume "${name}=${amount}": more than the capacity ${l.capacity}, so every acquire would be refused`,
          );
        }
      }
      const handled = new Map<string, number>();
      const limiter = new RateLimiter(repo, {
        onError: (_e, context) =>
          handled.set(context, (handled.get(context) ?? 0) + 1),
      });
      const signal = ctx.io.interruptSignal?.();
      const override = o.limit && o.limit.length > 0 ? { limits } : {};

      const samples = new Samples();
      let admitted = 0;
      let refused = 0;
      let errors = 0;
      const errorsByName = new Map<string, number>();
      let measuring = false;
      let next = 0;
      const run = async (until: number): Promise<void> => {
        await Promise.all(
          Array.from({ length: o.concurrency }, async () => {
            while (ctx.now() < until && !signal?.aborted) {
              const entityId = ids[next++ % ids.length] as string;
              const t0 = performance.now();
              let outcome: "admitted" | "refused" | string;
              try {
                await limiter.acquire(
                  { entityId, resource: o.resource, consume, ...override },
                  () => {},
                );
                outcome = "admitted";
              } catch (e) {
                outcome = e instanceof RateLimitExceeded
                  ? "refused"
                  : e instanceof Error
                  ? e.name
                  : "Error";
              }
              if (!measuring) continue;
              samples.push(performance.now() - t0);
              if (outcome === "admitted") admitted++;
              else if (outcome === "refused") refused++;
              else {
                errors++;
                errorsByName.set(outcome, (errorsByName.get(outcome) ?? 0) + 1);
              }
            }
          }),
        );
      };

      if (o.warmup > 0) await run(ctx.now() + o.warmup * 1000);
      const progress = startProgress(ctx, {
        format:
          "Load test {bar} {value}/{total}s | {rate} decisions/s | {refused} refused | {errors} errors",
        total: o.duration,
        payload: { rate: 0, refused: 0, errors: 0 },
        plainIntervalMs: 5000,
        delayMs: 0,
      }, json);
      measuring = true;
      counts.counting = true;
      const start = ctx.now();
      const ticker = setInterval(() => {
        const secs = (ctx.now() - start) / 1000;
        const n = admitted + refused + errors;
        progress.update(Math.min(o.duration, Math.floor(secs)), {
          rate: secs > 0 ? Math.round(n / secs) : 0,
          refused,
          errors,
        });
      }, 500);
      try {
        await run(start + o.duration * 1000);
      } finally {
        clearInterval(ticker);
        counts.counting = false;
        measuring = false;
        progress.stop();
      }
      const elapsed = Math.max(0.001, (ctx.now() - start) / 1000);
      const sorted = samples.sorted();
      const decisions = admitted + refused + errors;
      const sum = sorted.reduce((a, b) => a + b, 0);
      const report: LoadReport = {
        table: g.name,
        namespace: g.namespace,
        resource: o.resource,
        entities: o.entities,
        concurrency: o.concurrency,
        durationSeconds: o.duration,
        elapsedSeconds: Math.round(elapsed * 1000) / 1000,
        interrupted: signal?.aborted ?? false,
        decisions,
        decisionsPerSecond: Math.round(decisions / elapsed * 10) / 10,
        admitted,
        refused,
        errors,
        errorsByName: Object.fromEntries(errorsByName),
        latencyMs: {
          mean: sorted.length ? sum / sorted.length : 0,
          p50: percentile(sorted, 0.5),
          p95: percentile(sorted, 0.95),
          p99: percentile(sorted, 0.99),
          max: sorted.length ? sorted[sorted.length - 1] as number : 0,
        },
        dynamodb: {
          calls: counts.calls,
          attempts: counts.attempts,
          callsPerDecision: decisions > 0
            ? Math.round(counts.calls / decisions * 1000) / 1000
            : 0,
          byCommand: Object.fromEntries(
            [...counts.byCommand].sort((a, b) => b[1] - a[1]),
          ),
        },
      };

      let cleaned = 0;
      if (o.cleanup) {
        const bar = startProgress(ctx, {
          format: "Deleting load-test buckets {bar} {value}/{total} entities",
          total: ids.length,
        }, json);
        try {
          for (const [i, id] of ids.entries()) {
            cleaned += await repo.resetBuckets(id, o.resource);
            bar.update(i + 1);
          }
        } finally {
          bar.stop();
        }
      }
      if (json) {
        ctx.io.out(JSON.stringify(
          {
            ...report,
            limits: limits.map((l) => l.toDict()),
            consume,
            handledErrors: Object.fromEntries(handled),
            bucketsDeleted: o.cleanup ? cleaned : null,
          },
          null,
          2,
        ));
      } else {
        printReport(ctx, report, limits);
        for (const [context, n] of handled) {
          ctx.io.err(`Handled by the limiter (${context}): ${thousands(n)}`);
        }
        if (o.cleanup) {
          ctx.io.out(
            `Deleted ${
              thousands(cleaned)
            } bucket item(s) of the load-test entities.`,
          );
        }
      }
      return errors > 0 ? EXIT.FAILURE : EXIT.OK;
    }));
}
