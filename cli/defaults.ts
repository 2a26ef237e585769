/**
 * Resource-level and system-level default limits:
 * `resource set-defaults|get-defaults|delete-defaults|list` and
 * `system set-defaults|get-defaults|delete-defaults`.
 *
 * @module
 */
import { Command, Option } from "commander";
import type { Limit, OnUnavailable } from "../mod.ts";
import {
  action,
  argAt,
  type CliContext,
  connect,
  emit,
  EXIT,
  limitOption,
  printLimits,
  requireYes,
  resolveGlobals,
} from "./_context.ts";

/** The `resource` command group. */
export function makeResourceCommand(ctx: CliContext): Command {
  const resource = new Command("resource").description(
    "Manage resource-level default limits",
  );

  resource.command("set-defaults")
    .description("Store default limits for a resource")
    .argument("<resource>", "resource name, e.g. openai/gpt-4")
    .addOption(limitOption())
    .action(action(ctx, async (cmd) => {
      const r = argAt(cmd, 0);
      const { limit } = cmd.opts<{ limit: Limit[] }>();
      await (await connect(ctx, cmd)).setResourceDefaults(r, limit, {
        principal: "cli",
      });
      emit(ctx, resolveGlobals(cmd), {
        resource: r,
        limits: limit.map((l) => l.toDict()),
      }, () => {
        ctx.io.out(`Set ${limit.length} default(s) for resource '${r}':`);
        printLimits(ctx, limit);
      });
      return EXIT.OK;
    }));

  resource.command("get-defaults")
    .description("Show a resource's default limits (read-only)")
    .argument("<resource>", "resource name")
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const r = argAt(cmd, 0);
      const limits = await (await connect(ctx, cmd)).getResourceDefaults(r);
      emit(ctx, g, limits.map((l) => l.toDict()), () => {
        if (limits.length === 0) {
          return ctx.io.out(`No defaults configured for resource '${r}'`);
        }
        ctx.io.out(`Defaults for resource '${r}':`);
        printLimits(ctx, limits);
      });
      return EXIT.OK;
    }));

  resource.command("delete-defaults")
    .description("Delete a resource's default limits")
    .argument("<resource>", "resource name")
    .option("-y, --yes", "confirm")
    .action(action(ctx, async (cmd) => {
      const r = argAt(cmd, 0);
      requireYes(
        cmd.opts<{ yes?: boolean }>().yes,
        `delete all defaults for resource '${r}'`,
      );
      await (await connect(ctx, cmd)).deleteResourceDefaults(r, {
        principal: "cli",
      });
      emit(
        ctx,
        resolveGlobals(cmd),
        { resource: r, deleted: true },
        () => ctx.io.out(`Deleted defaults for resource '${r}'`),
      );
      return EXIT.OK;
    }));

  resource.command("list")
    .description("List resources with default limits (read-only)")
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const list = await (await connect(ctx, cmd)).listResourcesWithDefaults();
      emit(ctx, g, list, () => {
        if (list.length === 0) {
          return ctx.io.out("No resources with configured defaults");
        }
        ctx.io.out("Resources with configured defaults:");
        for (const r of list) ctx.io.out(`  ${r}`);
      });
      return EXIT.OK;
    }));
  return resource;
}

/** The `system` command group. */
export function makeSystemCommand(ctx: CliContext): Command {
  const system = new Command("system").description(
    "Manage system-wide default limits of the namespace",
  );

  system.command("set-defaults")
    .description("Replace the system-wide default limits")
    .addOption(limitOption())
    .addOption(
      new Option(
        "--on-unavailable <policy>",
        "behaviour when DynamoDB fails",
      ).choices(["allow", "block"]),
    )
    .action(action(ctx, async (cmd) => {
      const o = cmd.opts<{ limit: Limit[]; onUnavailable?: OnUnavailable }>();
      await (await connect(ctx, cmd)).setSystemDefaults(o.limit, {
        ...(o.onUnavailable ? { onUnavailable: o.onUnavailable } : {}),
        principal: "cli",
      });
      emit(ctx, resolveGlobals(cmd), {
        limits: o.limit.map((l) => l.toDict()),
        onUnavailable: o.onUnavailable ?? null,
      }, () => {
        ctx.io.out(`Set ${o.limit.length} system-wide default(s):`);
        printLimits(ctx, o.limit);
        if (o.onUnavailable) {
          ctx.io.out(`  on_unavailable: ${o.onUnavailable}`);
        }
      });
      return EXIT.OK;
    }));

  system.command("get-defaults")
    .description("Show the system-wide defaults (read-only)")
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const d = await (await connect(ctx, cmd)).getSystemDefaults();
      emit(ctx, g, {
        limits: d.limits.map((l) => l.toDict()),
        onUnavailable: d.onUnavailable,
        auditRetentionDays: d.auditRetentionDays,
      }, () => {
        if (d.limits.length === 0 && d.onUnavailable === null) {
          return ctx.io.out("No system defaults configured");
        }
        ctx.io.out("System-wide defaults:");
        if (d.limits.length > 0) {
          ctx.io.out("  Limits:");
          printLimits(ctx, d.limits, "    ");
        }
        if (d.onUnavailable) {
          ctx.io.out(`  on_unavailable: ${d.onUnavailable}`);
        }
      });
      return EXIT.OK;
    }));

  system.command("delete-defaults")
    .description("Delete the system-wide defaults")
    .option("-y, --yes", "confirm")
    .action(action(ctx, async (cmd) => {
      requireYes(
        cmd.opts<{ yes?: boolean }>().yes,
        "delete all system-wide defaults",
      );
      await (await connect(ctx, cmd)).deleteSystemDefaults({
        principal: "cli",
      });
      emit(
        ctx,
        resolveGlobals(cmd),
        { deleted: true },
        () => ctx.io.out("Deleted all system-wide defaults"),
      );
      return EXIT.OK;
    }));
  return system;
}
