/**
 * `resource capacity RESOURCE`: the capacity of a resource summed across
 * the entities that hold a bucket for it, per limit, with the most used
 * entities (spec F-050, `Repository.getResourceCapacity`).
 *
 * @module
 */
import { Command, InvalidArgumentError, Option } from "commander";
import type { EntityCapacity, ResourceCapacity } from "../mod.ts";
import { validateLimitName } from "../core/validation.ts";
import {
  action,
  argAt,
  type CliContext,
  connect,
  EXIT,
  intInRange,
  renderTable,
  resolveGlobals,
  thousands,
} from "./_context.ts";
import { startProgress } from "./_progress.ts";

/** One row of the `--top` list: an entity's most used limit. */
export interface TopEntity {
  /** Entity id. */
  readonly entityId: string;
  /** The limit with the highest utilisation. */
  readonly limitName: string;
  /** Its capacity. */
  readonly capacity: number;
  /** Tokens available now. */
  readonly available: number;
  /** Percent used. */
  readonly utilizationPct: number;
}

function used(capacity: number, available: number): number {
  return capacity > 0
    ? Math.round((capacity - available) / capacity * 10_000) / 100
    : 0;
}

/**
 * Keeps the `n` most used entities seen (by their most used limit), in
 * memory proportional to `n`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { topEntities } from "./capacity.ts";
 *
 * const top = topEntities(1);
 * top.add({ entityId: "a", parentId: null, shards: 1, limits: { rpm: { capacity: 10, available: 9 } } });
 * top.add({ entityId: "b", parentId: null, shards: 1, limits: { rpm: { capacity: 10, available: 2 } } });
 * assert.deepEqual(top.list().map((e) => [e.entityId, e.utilizationPct]), [["b", 80]]);
 * ```
 */
export function topEntities(
  n: number,
): { add(e: EntityCapacity): void; list(): TopEntity[] } {
  const kept: TopEntity[] = [];
  return {
    add(e: EntityCapacity): void {
      if (n <= 0) return;
      let best: TopEntity | null = null;
      for (const [limitName, v] of Object.entries(e.limits)) {
        const u = used(v.capacity, v.available);
        if (!best || u > best.utilizationPct) {
          best = { entityId: e.entityId, limitName, ...v, utilizationPct: u };
        }
      }
      if (!best) return;
      const last = kept[kept.length - 1];
      if (
        kept.length >= n && last && last.utilizationPct >= best.utilizationPct
      ) {
        return;
      }
      kept.push(best);
      kept.sort((a, b) =>
        b.utilizationPct - a.utilizationPct ||
        (a.entityId < b.entityId ? -1 : 1)
      );
      if (kept.length > n) kept.pop();
    },
    list: () => [...kept],
  };
}

function limitNameArg(value: string): string {
  try {
    return validateLimitName(value, "limit-name");
  } catch (e) {
    throw new InvalidArgumentError(e instanceof Error ? e.message : String(e));
  }
}

/** The `resource capacity` command. */
export function makeResourceCapacityCommand(ctx: CliContext): Command {
  return new Command("capacity")
    .description(
      "Sum the capacity and the tokens available now across every entity with a bucket for the resource (read-only)",
    )
    .argument("<resource>", "resource name, e.g. openai/gpt-4")
    .addOption(
      new Option(
        "--limit-name <name>",
        "only this limit (default: every limit)",
      )
        .argParser(limitNameArg),
    )
    .option("--parents-only", "only entities without a parent")
    .addOption(
      new Option(
        "--top <n>",
        "also list the n most used entities (by their most used limit)",
      ).argParser(intInRange(0, 1000)).default(0),
    )
    .addHelpText(
      "after",
      `
Reads the resource's buckets page by page (GSI2, eventually consistent) with flat memory.
Entities that never acquired the resource have no bucket and are not counted. Available tokens are
refilled to now; an entity in debt counts negative, so utilization can exceed 100%.`,
    )
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const resource = argAt(cmd, 0);
      const o = cmd.opts<
        { limitName?: string; parentsOnly?: boolean; top: number }
      >();
      const repo = await connect(ctx, cmd);
      const top = topEntities(o.top);
      const progress = startProgress(ctx, {
        format:
          "Reading buckets of {resource}: {value} item(s), {entities} entities",
        payload: { resource, entities: 0 },
      }, g.output === "json");
      let r: ResourceCapacity;
      try {
        r = await repo.getResourceCapacity(resource, {
          ...(o.limitName ? { limitName: o.limitName } : {}),
          parentsOnly: o.parentsOnly ?? false,
          onEntity: (e) => top.add(e),
          onPage: (p) =>
            progress.update(p.bucketItems, { entities: p.entities }),
        });
      } finally {
        progress.stop();
      }
      const list = top.list();
      if (g.output === "json") {
        ctx.io.out(JSON.stringify(
          {
            namespace: g.namespace,
            ...r,
            asOf: new Date(r.asOf).toISOString(),
            ...(o.top > 0 ? { top: list } : {}),
          },
          null,
          2,
        ));
        return EXIT.OK;
      }
      const scope = o.parentsOnly ? " (parents only)" : "";
      if (r.limits.length === 0) {
        ctx.io.out(
          `No buckets for resource '${resource}'${scope} in namespace '${g.namespace}'${
            o.limitName ? ` with limit '${o.limitName}'` : ""
          }: no entity has acquired it yet (or the buckets expired).`,
        );
        return EXIT.OK;
      }
      ctx.io.out(
        `Capacity of resource '${resource}'${scope} in namespace '${g.namespace}' at ${
          new Date(r.asOf).toISOString()
        }:`,
      );
      ctx.io.out(renderTable(
        ["Limit", "Entities", "Total capacity", "Available", "Utilization"],
        r.limits.map((l) => [
          l.limitName,
          thousands(l.entities),
          thousands(l.totalCapacity),
          thousands(l.totalAvailable),
          `${l.utilizationPct.toFixed(2)}%`,
        ]),
        { rightAlign: [1, 2, 3, 4] },
      ));
      ctx.io.out(
        `${thousands(r.entities)} entities, ${
          thousands(r.bucketItems)
        } bucket item(s) read.`,
      );
      if (list.length > 0) {
        ctx.io.out(`Most used ${list.length}:`);
        ctx.io.out(renderTable(
          ["Entity", "Limit", "Capacity", "Available", "Utilization"],
          list.map((e) => [
            e.entityId,
            e.limitName,
            thousands(e.capacity),
            thousands(e.available),
            `${e.utilizationPct.toFixed(2)}%`,
          ]),
          { rightAlign: [2, 3, 4] },
        ));
      }
      return EXIT.OK;
    }));
}
