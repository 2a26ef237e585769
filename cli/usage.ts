/**
 * `usage list|summary`: usage snapshots written by the stream worker
 * (spec 01 §4.8), by entity (`{ns}/ENTITY#{id}`, SK `#USAGE#…`) or by
 * resource (GSI2 `{ns}/RESOURCE#{r}`, SK `USAGE#…`).
 *
 * @module
 */
import { Command, Option } from "commander";
import type { UsageSnapshotFilter } from "../mod.ts";
import {
  action,
  type CliContext,
  CliUsageError,
  connect,
  emit,
  EXIT,
  intInRange,
  renderTable,
  resolveGlobals,
  thousands,
} from "./_context.ts";
import { isoTimeArg } from "./_iso_time.ts";
import { renderUsagePlot } from "./usage_plot.ts";

function filterFrom(cmd: Command): UsageSnapshotFilter {
  const o = cmd.opts<{
    entityId?: string;
    resource?: string;
    window?: string;
    start?: string;
    end?: string;
  }>();
  if (o.entityId === undefined && o.resource === undefined) {
    throw new CliUsageError(
      "Either --entity-id or --resource must be provided",
    );
  }
  return {
    ...(o.entityId !== undefined ? { entityId: o.entityId } : {}),
    ...(o.resource !== undefined ? { resource: o.resource } : {}),
    ...(o.window !== undefined ? { windowType: o.window } : {}),
    ...(o.start !== undefined ? { start: o.start } : {}),
    ...(o.end !== undefined ? { end: o.end } : {}),
  };
}

function addFilterOptions(cmd: Command): Command {
  return cmd
    .option("-e, --entity-id <id>", "entity ID")
    .option("-r, --resource <resource>", "resource")
    .addOption(
      new Option("-w, --window <window>", "window type").choices([
        "hourly",
        "daily",
        "monthly",
      ]),
    )
    .option(
      "--start <iso>",
      "first window start, e.g. 2026-01-15T00:00:00Z",
      isoTimeArg,
    )
    .option("--end <iso>", "last window start", isoTimeArg);
}

function countersText(c: Readonly<Record<string, number>>): string {
  return Object.keys(c).sort().map((k) => `${k}=${thousands(c[k] ?? 0)}`)
    .join(", ");
}

/** The `usage` command group. */
export function makeUsageCommand(ctx: CliContext): Command {
  const usage = new Command("usage").description(
    "Read usage snapshots written by the stream worker",
  );

  addFilterOptions(usage.command("list"))
    .description("List usage snapshots (read-only)")
    .option("--limit <n>", "page size", intInRange(1, 1000), 100)
    .option(
      "--plot",
      "draw a chart per limit of the tokens consumed per window (a terminal only; else the table)",
    )
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const f = filterFrom(cmd);
      const { limit, plot } = cmd.opts<{ limit: number; plot?: boolean }>();
      const repo = await connect(ctx, cmd);
      const { snapshots, more } = await repo.getUsageSnapshots({
        ...f,
        limit,
      });
      emit(ctx, g, { snapshots, more }, () => {
        if (snapshots.length === 0) {
          return ctx.io.out("No usage snapshots found");
        }
        if (plot && (ctx.io.outIsTerminal?.() ?? false)) {
          ctx.io.out(renderUsagePlot(snapshots, {
            columns: ctx.io.columns?.() ?? 80,
          }));
          if (more) {
            ctx.io.out(
              "More snapshots exist. Narrow --start/--end to see more.",
            );
          }
          return;
        }
        ctx.io.out(renderTable(
          ["Window Start", "Type", "Resource", "Entity", "Events", "Counters"],
          snapshots.map((s) => [
            s.windowStart,
            s.windowType,
            s.resource,
            s.entityId,
            thousands(s.totalEvents),
            countersText(s.counters),
          ]),
        ));
        ctx.io.out(`Total: ${snapshots.length} snapshots`);
        if (more) {
          ctx.io.out("More snapshots exist. Narrow --start/--end to see more.");
        }
      });
      return EXIT.OK;
    }));

  addFilterOptions(usage.command("summary"))
    .description("Sum and average usage counters (read-only)")
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const f = filterFrom(cmd);
      const repo = await connect(ctx, cmd);
      const { snapshots } = await repo.getUsageSnapshots(f);
      const totals: Record<string, number> = {};
      for (const s of snapshots) {
        for (const [k, v] of Object.entries(s.counters)) {
          totals[k] = (totals[k] ?? 0) + v;
        }
      }
      const starts = snapshots.map((s) => s.windowStart).sort();
      const summary = {
        entityId: f.entityId ?? null,
        resource: f.resource ?? null,
        window: f.windowType ?? null,
        snapshots: snapshots.length,
        from: starts[0] ?? null,
        to: starts.at(-1) ?? null,
        totals,
        averages: Object.fromEntries(
          Object.entries(totals).map((
            [k, v],
          ) => [k, snapshots.length ? v / snapshots.length : 0]),
        ),
      };
      emit(ctx, g, summary, () => {
        if (snapshots.length === 0) {
          return ctx.io.out("No usage data found matching the criteria");
        }
        ctx.io.out("Usage Summary");
        ctx.io.out(`Entity:     ${summary.entityId ?? "(all)"}`);
        ctx.io.out(`Resource:   ${summary.resource ?? "(all)"}`);
        if (f.windowType) ctx.io.out(`Window:     ${f.windowType}`);
        ctx.io.out(`Snapshots:  ${snapshots.length}`);
        ctx.io.out(`Time Range: ${summary.from} to ${summary.to}`);
        ctx.io.out(renderTable(
          ["Limit", "Total", "Average"],
          Object.keys(totals).sort().map((k) => [
            k,
            thousands(totals[k] ?? 0),
            ((totals[k] ?? 0) / snapshots.length).toFixed(2),
          ]),
          { rightAlign: [1, 2] },
        ));
      });
      return EXIT.OK;
    }));
  return usage;
}
