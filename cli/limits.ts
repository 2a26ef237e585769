/**
 * `limits plan|apply|diff|export`: limits as code. A YAML manifest declares
 * the system, resource and entity limits of a namespace; `plan` shows each
 * change with its old and new values, `apply` writes only those changes
 * (atomic per entity, conditioned on the values planned against, with audit
 * events), `diff` exits 1 when the live state has drifted from the manifest,
 * and `export` writes the live state as a manifest.
 *
 * @module
 */
import { Command, InvalidArgumentError, Option } from "commander";
import { CLIENT_VERSION, type Repository } from "../mod.ts";
import { validatePrincipal } from "../core/validation.ts";
import {
  action,
  type CliContext,
  CliExit,
  CliUsageError,
  connect,
  EXIT,
  type GlobalConfig,
  resolveGlobals,
} from "./_context.ts";
import { readTextFile, writeTextFile } from "./_host.ts";
import { startProgress } from "./_progress.ts";
import {
  formatIssue,
  type LimitSet,
  type LimitsState,
  renderLimitsManifest,
  safeParseLimitsManifest,
} from "./limits_manifest.ts";
import {
  type Change,
  changeJson,
  formatChange,
  type LimitsPlan,
  liveAsState,
  type LiveState,
  planLimits,
  summarize,
  targetJson,
  targetLabel,
  type TargetRef,
} from "./limits_plan.ts";
import {
  applyLimitsPlan,
  applyUnits,
  readLiveLimits,
  type UnitResult,
} from "./limits_store.ts";

const MANIFEST_HELP = `
Manifest (YAML):
  namespace: default              # optional; -N when absent (both given: they must agree)
  system:
    on_unavailable: block         # allow | block (optional)
    limits:
      rpm: {capacity: 1000}       # refill_amount defaults to capacity, refill_period to 60 (seconds)
  resources:
    openai/gpt-4:
      limits:
        tpm: {capacity: 100000, refill_period: 60, burst: 150000}
  entities:
    key-1:
      resources:
        _default_:                # every resource of the entity
          limits:
            rpm: 100/min          # shorthand: rate[/period][:burst], as with -l

Ownership: targets that 'limits apply' created or changed are managed by the manifest, so removing
them from the file deletes them. Limits set by other means are left alone unless --prune is given.`;

interface LimitsFlags {
  readonly file: string;
  readonly prune?: boolean;
}

function fileOption(): Option {
  return new Option("-f, --file <path>", "the limits manifest (YAML)")
    .makeOptionMandatory();
}

function pruneOption(): Option {
  return new Option(
    "--prune",
    "also delete live limits the manifest does not declare, even those it did not create",
  );
}

interface Loaded {
  readonly g: GlobalConfig;
  readonly file: string;
  readonly desired: LimitsState;
  readonly repo: Repository;
  readonly live: LiveState;
  readonly plan: LimitsPlan;
}

async function readLive(
  ctx: CliContext,
  g: GlobalConfig,
  repo: Repository,
  also?: LimitsState,
): Promise<LiveState> {
  const progress = startProgress(ctx, {
    format: "Reading live limits: {value} config item(s)",
  }, g.output === "json");
  try {
    return await readLiveLimits(repo, {
      ...(also ? { also } : {}),
      onProgress: (n) => progress.update(n),
    });
  } finally {
    progress.stop();
  }
}

/** Reads and checks the manifest, connects to its namespace, reads the live limits and plans. */
async function load(ctx: CliContext, cmd: Command): Promise<Loaded> {
  const g = resolveGlobals(cmd);
  const flags = cmd.opts<LimitsFlags>();
  const text = await readTextFile(flags.file, "limits manifest");
  const parsed = safeParseLimitsManifest(text);
  if (!parsed.ok) {
    if (g.output === "json") {
      ctx.io.out(JSON.stringify(
        { ok: false, file: flags.file, issues: parsed.issues },
        null,
        2,
      ));
    }
    for (const issue of parsed.issues) {
      ctx.io.err(formatIssue(flags.file, issue));
    }
    throw new CliExit(
      EXIT.USAGE,
      `Cannot use limits manifest "${flags.file}": ${parsed.issues.length} problem(s) listed above; fix them and run the command again`,
    );
  }
  const m = parsed.value;
  const namespaceFromFlag = cmd.getOptionValueSourceWithGlobals("namespace") ===
    "cli";
  if (
    m.namespace !== null && namespaceFromFlag && m.namespace !== g.namespace
  ) {
    throw new CliUsageError(
      `${flags.file}:${m.namespaceLine}: the manifest is for namespace "${m.namespace}" but -N is "${g.namespace}"; drop -N or make them agree`,
    );
  }
  const namespace = m.namespace ?? g.namespace;
  const desired: LimitsState = {
    namespace,
    system: m.system,
    resources: m.resources,
    entities: m.entities,
  };
  const repo = await connect(ctx, cmd, { namespace });
  const live = await readLive(ctx, g, repo, desired);
  const plan = planLimits(desired, live, { prune: flags.prune ?? false });
  return { g, file: flags.file, desired, repo, live, plan };
}

function countLine(plan: LimitsPlan): string {
  const s = summarize(plan);
  return `${s.create} to create, ${s.update} to update, ${s.delete} to delete; ${s.unchanged} unchanged`;
}

function printUnmanaged(
  ctx: CliContext,
  unmanaged: readonly TargetRef[],
): void {
  if (unmanaged.length === 0) return;
  ctx.io.out(
    `Left alone: ${unmanaged.length} live target(s) not in the manifest and not created by 'limits apply' (--prune deletes them):`,
  );
  for (const t of unmanaged.slice(0, 10)) ctx.io.out(`  ${targetLabel(t)}`);
  if (unmanaged.length > 10) {
    ctx.io.out(`  ... and ${unmanaged.length - 10} more`);
  }
}

function printChanges(ctx: CliContext, changes: readonly Change[]): void {
  for (const c of changes) for (const line of formatChange(c)) ctx.io.out(line);
}

function planJson(l: Loaded): Record<string, unknown> {
  return {
    namespace: l.plan.namespace,
    table: l.g.name,
    file: l.file,
    changes: l.plan.changes.map(changeJson),
    summary: summarize(l.plan),
    unmanaged: l.plan.unmanaged.map(targetJson),
  };
}

function makePlan(ctx: CliContext): Command {
  return new Command("plan")
    .description(
      "Show what 'limits apply' would change, with old -> new values (read-only)",
    )
    .addOption(fileOption())
    .addOption(pruneOption())
    .addHelpText(
      "after",
      "\nSymbols: + create, ~ update, - delete. Exit 0, or 2 for an invalid manifest.",
    )
    .action(action(ctx, async (cmd) => {
      const l = await load(ctx, cmd);
      if (l.g.output === "json") {
        ctx.io.out(JSON.stringify(planJson(l), null, 2));
        return EXIT.OK;
      }
      if (l.plan.changes.length === 0) {
        ctx.io.out(
          `No changes: namespace '${l.plan.namespace}' matches ${l.file} (${l.plan.unchanged} target(s)).`,
        );
      } else {
        ctx.io.out(
          `Plan for namespace '${l.plan.namespace}' of table '${l.g.name}' from ${l.file}:`,
        );
        printChanges(ctx, l.plan.changes);
        ctx.io.out("");
        ctx.io.out(`Plan: ${countLine(l.plan)}.`);
      }
      printUnmanaged(ctx, l.plan.unmanaged);
      return EXIT.OK;
    }));
}

function makeDiff(ctx: CliContext): Command {
  return new Command("diff")
    .description(
      "Compare the live limits with the manifest; exit 1 on drift, for CI (read-only)",
    )
    .addOption(fileOption())
    .addOption(pruneOption())
    .addHelpText(
      "after",
      "\nExit codes: 0 no drift, 1 drift (or a failure, said on stderr), 2 invalid manifest or flags.",
    )
    .action(action(ctx, async (cmd) => {
      const l = await load(ctx, cmd);
      const drift = l.plan.changes.length > 0;
      if (l.g.output === "json") {
        ctx.io.out(JSON.stringify({ drift, ...planJson(l) }, null, 2));
        return drift ? EXIT.FAILURE : EXIT.OK;
      }
      if (!drift) {
        ctx.io.out(
          `No drift: namespace '${l.plan.namespace}' matches ${l.file}.`,
        );
      } else {
        ctx.io.out(
          `Drift: ${l.plan.changes.length} difference(s) between ${l.file} and namespace '${l.plan.namespace}' (what 'limits apply' would change):`,
        );
        printChanges(ctx, l.plan.changes);
      }
      printUnmanaged(ctx, l.plan.unmanaged);
      return drift ? EXIT.FAILURE : EXIT.OK;
    }));
}

function principalArg(value: string): string {
  try {
    return validatePrincipal(value);
  } catch (e) {
    throw new InvalidArgumentError(e instanceof Error ? e.message : String(e));
  }
}

function makeApply(ctx: CliContext): Command {
  return new Command("apply")
    .description(
      "Write the changes of the plan: only what differs, atomic per entity, with audit events",
    )
    .addOption(fileOption())
    .addOption(pruneOption())
    .option("-y, --yes", "confirm deletions (required when the plan deletes)")
    .addOption(
      new Option("--principal <id>", "who is acting, in the audit events")
        .default("cli").argParser(principalArg),
    )
    .addHelpText(
      "after",
      `
Each unit (the system defaults, one resource, or all of one entity's resources) is written in one
request conditioned on the values the plan read: a unit changed meanwhile is not overwritten and
is reported; the others still apply. Exit 0 when every unit applied, 1 when one failed, 2 for an
invalid manifest or a delete without --yes.`,
    )
    .action(action(ctx, async (cmd) => {
      const l = await load(ctx, cmd);
      const o = cmd.opts<{ yes?: boolean; principal: string }>();
      const json = l.g.output === "json";
      if (l.plan.changes.length === 0) {
        if (json) {
          ctx.io.out(JSON.stringify({ ...planJson(l), results: [] }, null, 2));
        } else {
          ctx.io.out(
            `No changes: namespace '${l.plan.namespace}' matches ${l.file}; nothing written.`,
          );
          printUnmanaged(ctx, l.plan.unmanaged);
        }
        return EXIT.OK;
      }
      const deletes = l.plan.changes.filter((c) => c.action === "delete");
      if (!json) {
        ctx.io.out(
          `Applying to namespace '${l.plan.namespace}' of table '${l.g.name}' from ${l.file}:`,
        );
        printChanges(ctx, l.plan.changes);
      }
      if (deletes.length > 0 && !o.yes) {
        throw new CliUsageError(
          `Refusing to delete ${deletes.length} target(s) without --yes (this command does not prompt): ${
            deletes.slice(0, 3).map((c) => targetLabel(c.target)).join(", ")
          }${deletes.length > 3 ? ", ..." : ""}`,
        );
      }
      const progress = startProgress(ctx, {
        format: "Applying {bar} {value}/{total} unit(s), ETA {eta_formatted}",
        total: applyUnits(l.plan).length,
      }, json);
      let results: UnitResult[];
      try {
        results = await applyLimitsPlan(l.repo, l.plan, {
          principal: o.principal,
          sleep: (ms) => ctx.sleep(ms),
          onUnit: (_r, done) => progress.update(done),
        });
      } finally {
        progress.stop();
      }
      const applied = { created: 0, updated: 0, deleted: 0 };
      for (const r of results) {
        if (!r.ok) continue;
        for (const c of r.unit.changes) {
          if (c.action === "create") applied.created++;
          else if (c.action === "update") applied.updated++;
          else applied.deleted++;
        }
      }
      const failed = results.filter((r) => !r.ok);
      if (json) {
        ctx.io.out(JSON.stringify(
          {
            ...planJson(l),
            results: results.map((r) => ({
              unit: r.unit.label,
              ok: r.ok,
              ...(r.ok
                ? (r.warning ? { warning: r.warning } : {})
                : { kind: r.kind, message: r.message }),
              changes: r.unit.changes.map((c) => targetJson(c.target)),
            })),
            applied,
            failed: failed.length,
          },
          null,
          2,
        ));
      } else {
        ctx.io.out("");
        for (const r of results) {
          if (!r.ok) ctx.io.err(`✗ ${r.unit.label}: ${r.message}`);
          else if (r.warning) ctx.io.err(`! ${r.unit.label}: ${r.warning}`);
        }
        ctx.io.out(
          `Applied: ${applied.created} created, ${applied.updated} updated, ${applied.deleted} deleted.`,
        );
        if (failed.length > 0) {
          ctx.io.out(
            `${failed.length} of ${results.length} unit(s) failed (listed on stderr); run 'limits plan' to see what is left.`,
          );
        }
      }
      return failed.length > 0 ? EXIT.FAILURE : EXIT.OK;
    }));
}

function manifestObject(state: LimitsState): Record<string, unknown> {
  const limits = (set: LimitSet) =>
    Object.fromEntries(
      [...set.values()].map((l) => [l.name, {
        capacity: l.capacity,
        "refill_amount": l.refillAmount,
        "refill_period": l.refillPeriodSeconds,
      }]),
    );
  return {
    namespace: state.namespace,
    ...(state.system
      ? {
        system: {
          ...(state.system.onUnavailable
            ? { "on_unavailable": state.system.onUnavailable }
            : {}),
          limits: limits(state.system.limits),
        },
      }
      : {}),
    resources: Object.fromEntries(
      [...state.resources].map(([r, set]) => [r, { limits: limits(set) }]),
    ),
    entities: Object.fromEntries(
      [...state.entities].map(([id, byResource]) => [id, {
        resources: Object.fromEntries(
          [...byResource].map(([r, set]) => [r, { limits: limits(set) }]),
        ),
      }]),
    ),
  };
}

function targetCount(state: LimitsState): number {
  let n = (state.system ? 1 : 0) + state.resources.size;
  for (const m of state.entities.values()) n += m.size;
  return n;
}

function makeExport(ctx: CliContext): Command {
  return new Command("export")
    .description(
      "Write the live limits of the namespace as a manifest (applying it is a no-op) (read-only)",
    )
    .option("-f, --file <path>", "write to this file (default: stdout)")
    .addHelpText(
      "after",
      "\nWith --output json, prints the manifest as JSON instead of YAML.",
    )
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const { file } = cmd.opts<{ file?: string }>();
      const repo = await connect(ctx, cmd);
      const state = liveAsState(await readLive(ctx, g, repo));
      if (g.output === "json") {
        const body = JSON.stringify(manifestObject(state), null, 2);
        if (file) await writeTextFile(file, `${body}\n`, "export");
        else ctx.io.out(body);
        return EXIT.OK;
      }
      const yaml = renderLimitsManifest(state, [
        `Limits of namespace "${state.namespace}" in table "${g.name}", exported by zae-limiter ${CLIENT_VERSION} at ${
          new Date(ctx.now()).toISOString()
        }.`,
        "Edit, then: zae-limiter limits plan -f <this file>, and limits apply -f <this file>.",
      ]);
      if (file) {
        await writeTextFile(file, yaml, "export");
        ctx.io.out(
          `Exported ${
            targetCount(state)
          } target(s) of namespace '${state.namespace}' to ${file}`,
        );
      } else {
        ctx.io.out(yaml.replace(/\n$/, ""));
      }
      return EXIT.OK;
    }));
}

/** The `limits` command group. */
export function makeLimitsCommand(ctx: CliContext): Command {
  const limits = new Command("limits")
    .description(
      "Limits as code: plan, apply, diff and export a YAML manifest of a namespace's limits",
    )
    .addHelpText("after", MANIFEST_HELP);
  limits.addCommand(makePlan(ctx));
  limits.addCommand(makeApply(ctx));
  limits.addCommand(makeDiff(ctx));
  limits.addCommand(makeExport(ctx));
  return limits;
}
