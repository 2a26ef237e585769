/**
 * `entity create|show|delete|children|verify|set-limits|get-limits|delete-limits|list|list-resources`.
 *
 * @module
 */
import { Command, Option } from "commander";
import { type Entity, Limit, RateLimiter } from "../mod.ts";
import { DEFAULT_RESOURCE } from "../core/keys.ts";
import {
  action,
  argAt,
  type CliContext,
  CliExit,
  CliUsageError,
  connect,
  emit,
  EXIT,
  limitOption,
  printLimits,
  renderTable,
  requireYes,
  resolveGlobals,
} from "./_context.ts";

function entityJson(e: Entity): Record<string, unknown> {
  return {
    id: e.id,
    name: e.name,
    parentId: e.parentId,
    cascade: e.cascade,
    metadata: e.metadata,
    createdAt: e.createdAt,
  };
}

function parseMetadata(pairs: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const i = p.indexOf("=");
    if (i <= 0) {
      throw new CliUsageError(
        `Invalid --metadata '${p}': use KEY=VALUE`,
      );
    }
    out[p.slice(0, i)] = p.slice(i + 1);
  }
  return out;
}

function resourceOption(): Option {
  return new Option(
    "-r, --resource <resource>",
    "resource the limits apply to",
  ).default(DEFAULT_RESOURCE);
}

/** The `entity` command group. */
export function makeEntityCommand(ctx: CliContext): Command {
  const entity = new Command("entity").description(
    "Manage entities (API keys, users, projects) and their limits",
  );

  entity.command("create")
    .description("Create an entity")
    .argument("<entity-id>", "entity ID")
    .option("--display-name <name>", "display name (default: the ID)")
    .option("--parent <parent-id>", "parent entity ID")
    .option("--cascade", "also consume from the parent on every acquire")
    .option(
      "--metadata <key=value>",
      "metadata entry; repeatable",
      (v: string, prev: string[] | undefined) => [...(prev ?? []), v],
    )
    .action(action(ctx, async (cmd) => {
      const id = argAt(cmd, 0);
      const o = cmd.opts<{
        displayName?: string;
        parent?: string;
        cascade?: boolean;
        metadata?: string[];
      }>();
      const metadata = parseMetadata(o.metadata ?? []);
      const repo = await connect(ctx, cmd);
      const e = await repo.createEntity(id, {
        ...(o.displayName !== undefined ? { name: o.displayName } : {}),
        ...(o.parent !== undefined ? { parentId: o.parent } : {}),
        cascade: o.cascade ?? false,
        metadata,
        principal: "cli",
      });
      emit(ctx, resolveGlobals(cmd), entityJson(e), () => {
        ctx.io.out(`Created entity '${e.id}'`);
        if (e.name !== e.id) ctx.io.out(`  Name:    ${e.name}`);
        if (e.parentId) ctx.io.out(`  Parent:  ${e.parentId}`);
        ctx.io.out(`  Cascade: ${e.cascade}`);
      });
      return EXIT.OK;
    }));

  entity.command("show")
    .description("Show an entity (read-only)")
    .argument("<entity-id>", "entity ID")
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const id = argAt(cmd, 0);
      const e = await (await connect(ctx, cmd)).getEntity(id);
      if (!e) throw new CliExit(EXIT.FAILURE, `Entity '${id}' not found`);
      emit(ctx, g, entityJson(e), () => {
        ctx.io.out(`Entity: ${e.id}`);
        if (e.name !== e.id) ctx.io.out(`  Name:       ${e.name}`);
        ctx.io.out(`  Parent:     ${e.parentId ?? "(none)"}`);
        ctx.io.out(`  Cascade:    ${e.cascade}`);
        ctx.io.out(`  Created:    ${e.createdAt ?? "-"}`);
        if (Object.keys(e.metadata).length > 0) {
          ctx.io.out(`  Metadata:   ${JSON.stringify(e.metadata)}`);
        }
      });
      return EXIT.OK;
    }));

  entity.command("delete")
    .description(
      "Delete an entity with its configs, usage snapshots and buckets",
    )
    .argument("<entity-id>", "entity ID")
    .option("-y, --yes", "confirm")
    .action(action(ctx, async (cmd) => {
      const id = argAt(cmd, 0);
      requireYes(cmd.opts<{ yes?: boolean }>().yes, `delete entity '${id}'`);
      const n = await (await connect(ctx, cmd)).deleteEntity(id, {
        principal: "cli",
      });
      emit(
        ctx,
        resolveGlobals(cmd),
        { entityId: id, deleted: true, itemsDeleted: n },
        () => ctx.io.out(`Deleted entity '${id}' (${n} item(s))`),
      );
      return EXIT.OK;
    }));

  entity.command("children")
    .description("List the children of an entity (read-only)")
    .argument("<entity-id>", "parent entity ID")
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const id = argAt(cmd, 0);
      const children = await (await connect(ctx, cmd)).getChildren(id);
      emit(ctx, g, children.map(entityJson), () => {
        if (children.length === 0) {
          return ctx.io.out(`No children for entity '${id}'`);
        }
        ctx.io.out(renderTable(
          ["Entity", "Name", "Cascade"],
          children.map((c) => [c.id, c.name, String(c.cascade)]),
        ));
        ctx.io.out(`Total: ${children.length} child(ren)`);
      });
      return EXIT.OK;
    }));

  entity.command("verify")
    .description(
      "Check that an entity exists, its parent exists, and a capacity read works (read-only)",
    )
    .argument("<entity-id>", "entity ID")
    .option(
      "-r, --resource <resource>",
      "resource for the capacity read",
      "health-check",
    )
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const id = argAt(cmd, 0);
      const { resource } = cmd.opts<{ resource: string }>();
      const repo = await connect(ctx, cmd);
      const problems: string[] = [];
      const e = await repo.getEntity(id);
      let parentOk: boolean | null = null;
      let available: Record<string, number> | null = null;
      if (!e) problems.push(`entity '${id}' not found`);
      else if (e.parentId) {
        parentOk = (await repo.getEntity(e.parentId)) !== null;
        if (!parentOk) problems.push(`parent '${e.parentId}' not found`);
      }
      if (e) {
        try {
          available = await new RateLimiter(repo).available({
            entityId: id,
            resource,
            limits: [Limit.perMinute("test", 1000)],
          });
        } catch (err) {
          problems.push(
            `capacity read failed: ${
              err instanceof Error ? err.message : String(err)
            }`,
          );
        }
      }
      emit(ctx, g, {
        entityId: id,
        exists: e !== null,
        parentId: e?.parentId ?? null,
        parentExists: parentOk,
        available,
        ok: problems.length === 0,
        problems,
      }, () => {
        if (e) {
          ctx.io.out(`Entity: ${e.id}, parent: ${e.parentId ?? "(none)"}`);
        }
        if (available) {
          ctx.io.out(
            `Available capacity (${resource}): ${
              Object.entries(available).map(([k, v]) => `${k}=${v}`).join(", ")
            }`,
          );
        }
        for (const p of problems) ctx.io.err(`✗ ${p}`);
        if (problems.length === 0) ctx.io.out(`✓ Entity '${id}' verified`);
      });
      return problems.length === 0 ? EXIT.OK : EXIT.FAILURE;
    }));

  entity.command("set-limits")
    .description("Store limits for an entity (per resource or all resources)")
    .argument("<entity-id>", "entity ID")
    .addOption(resourceOption())
    .addOption(limitOption())
    .addHelpText(
      "after",
      "\nExample:\n  zae-limiter entity set-limits key-1 -l rpm:100/min -l tpm:10000/min:15000 -r openai/gpt-4",
    )
    .action(action(ctx, async (cmd) => {
      const id = argAt(cmd, 0);
      const o = cmd.opts<{ resource: string; limit: Limit[] }>();
      await (await connect(ctx, cmd)).setLimits(id, o.limit, {
        resource: o.resource,
        principal: "cli",
      });
      emit(ctx, resolveGlobals(cmd), {
        entityId: id,
        resource: o.resource,
        limits: o.limit.map((l) => l.toDict()),
      }, () => {
        ctx.io.out(
          `Set ${o.limit.length} limit(s) for entity '${id}' on resource '${o.resource}':`,
        );
        printLimits(ctx, o.limit);
      });
      return EXIT.OK;
    }));

  entity.command("get-limits")
    .description("Show an entity's stored limits (read-only)")
    .argument("<entity-id>", "entity ID")
    .addOption(resourceOption())
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const id = argAt(cmd, 0);
      const { resource } = cmd.opts<{ resource: string }>();
      const limits = await (await connect(ctx, cmd)).getLimits(id, {
        resource,
      });
      emit(ctx, g, limits.map((l) => l.toDict()), () => {
        if (limits.length === 0) {
          return ctx.io.out(
            `No limits configured for entity '${id}' on resource '${resource}'`,
          );
        }
        ctx.io.out(`Limits for entity '${id}' on resource '${resource}':`);
        printLimits(ctx, limits);
      });
      return EXIT.OK;
    }));

  entity.command("delete-limits")
    .description("Delete an entity's stored limits for a resource")
    .argument("<entity-id>", "entity ID")
    .addOption(resourceOption())
    .option("-y, --yes", "confirm")
    .action(action(ctx, async (cmd) => {
      const id = argAt(cmd, 0);
      const o = cmd.opts<{ resource: string; yes?: boolean }>();
      requireYes(o.yes, `delete the limits of entity '${id}'`);
      await (await connect(ctx, cmd)).deleteLimits(id, {
        resource: o.resource,
        principal: "cli",
      });
      emit(
        ctx,
        resolveGlobals(cmd),
        { entityId: id, resource: o.resource, deleted: true },
        () =>
          ctx.io.out(
            `Deleted limits for entity '${id}' on resource '${o.resource}'`,
          ),
      );
      return EXIT.OK;
    }));

  entity.command("list")
    .description("List entities with custom limits for a resource (read-only)")
    .requiredOption("--with-custom-limits <resource>", "resource")
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const { withCustomLimits: r } = cmd.opts<{ withCustomLimits: string }>();
      const ids = await (await connect(ctx, cmd)).listEntitiesWithCustomLimits(
        r,
      );
      emit(ctx, g, ids, () => {
        if (ids.length === 0) {
          return ctx.io.out(
            `No entities with custom limits for resource '${r}'`,
          );
        }
        for (const id of ids) ctx.io.out(id);
      });
      return EXIT.OK;
    }));

  entity.command("list-resources")
    .description("List resources with entity-level custom limits (read-only)")
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const list = await (await connect(ctx, cmd))
        .listResourcesWithEntityConfigs();
      emit(ctx, g, list, () => {
        if (list.length === 0) {
          return ctx.io.out("No resources with entity-level custom limits");
        }
        ctx.io.out("Resources with entity-level custom limits:");
        for (const r of list) ctx.io.out(`  ${r}`);
      });
      return EXIT.OK;
    }));
  return entity;
}
