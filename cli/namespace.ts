/**
 * `namespace register|list|show|delete|recover|orphans|purge`. Every
 * subcommand works on the registry through the `default` namespace; `-N` is
 * not used. Only `register` registers.
 *
 * @module
 */
import { Command } from "commander";
import { EntityNotFoundError, type NamespaceInfo } from "../mod.ts";
import {
  action,
  argAt,
  argsFrom,
  type CliContext,
  CliExit,
  connect,
  emit,
  EXIT,
  renderTable,
  requireYes,
  resolveGlobals,
} from "./_context.ts";

function nsJson(n: NamespaceInfo): Record<string, unknown> {
  return {
    name: n.name,
    namespaceId: n.namespaceId,
    status: n.status,
    createdAt: n.createdAt,
    deletedAt: n.deletedAt ?? null,
  };
}

/** The `namespace` command group. */
export function makeNamespaceCommand(ctx: CliContext): Command {
  const ns = new Command("namespace").description(
    "Manage namespaces (tenants sharing one table)",
  );
  const registry = { namespace: "default" } as const;

  ns.command("register")
    .description("Register one or more namespaces (idempotent)")
    .argument("<names...>", "namespace names")
    .action(action(ctx, async (cmd) => {
      const repo = await connect(ctx, cmd, registry);
      const names = argsFrom(cmd, 0);
      const ids: [string, string][] = [];
      for (const name of names) {
        ids.push([name, await repo.registerNamespace(name)]);
      }
      if (ids.length === 1) {
        const [name, id] = ids[0] as [string, string];
        ctx.io.out(`Registered namespace '${name}': ${id}`);
      } else {
        ctx.io.out(`Registered ${ids.length} namespace(s):`);
        for (const [name, id] of ids) ctx.io.out(`  ${name}: ${id}`);
      }
      return EXIT.OK;
    }));

  ns.command("list")
    .description("List active namespaces (read-only)")
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const list = await (await connect(ctx, cmd, registry)).listNamespaces();
      emit(ctx, g, list.map(nsJson), () => {
        if (list.length === 0) return ctx.io.out("No namespaces registered.");
        ctx.io.out(renderTable(
          ["Name", "Namespace ID", "Created At"],
          list.map((n) => [n.name, n.namespaceId, n.createdAt ?? "-"]),
        ));
        ctx.io.out("");
        ctx.io.out(`Total: ${list.length} namespace(s)`);
      });
      return EXIT.OK;
    }));

  ns.command("show")
    .description("Show one namespace (read-only)")
    .argument("<name>", "namespace name")
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const name = argAt(cmd, 0);
      const info = await (await connect(ctx, cmd, registry)).getNamespace(name);
      if (!info) {
        throw new CliExit(EXIT.FAILURE, `Namespace '${name}' not found.`);
      }
      emit(ctx, g, nsJson(info), () => {
        ctx.io.out(`Namespace:    ${info.name}`);
        ctx.io.out(`Namespace ID: ${info.namespaceId}`);
        ctx.io.out(`Status:       ${info.status}`);
        ctx.io.out(`Created At:   ${info.createdAt ?? "-"}`);
      });
      return EXIT.OK;
    }));

  ns.command("delete")
    .description("Soft-delete a namespace (data is kept and recoverable)")
    .argument("<name>", "namespace name")
    .option("-y, --yes", "confirm")
    .action(action(ctx, async (cmd) => {
      const name = argAt(cmd, 0);
      requireYes(
        cmd.opts<{ yes?: boolean }>().yes,
        `delete namespace '${name}'`,
      );
      const repo = await connect(ctx, cmd, registry);
      if (!(await repo.getNamespace(name))) {
        throw new CliExit(EXIT.FAILURE, `Namespace '${name}' not found.`);
      }
      await repo.deleteNamespace(name);
      ctx.io.out(`Namespace '${name}' deleted (data orphaned, recoverable).`);
      return EXIT.OK;
    }));

  ns.command("recover")
    .description("Recover a soft-deleted namespace by its ID")
    .argument("<namespace-id>", "namespace ID (see 'namespace orphans')")
    .action(action(ctx, async (cmd) => {
      const id = argAt(cmd, 0);
      const repo = await connect(ctx, cmd, registry);
      try {
        const name = await repo.recoverNamespace(id);
        ctx.io.out(`Recovered namespace '${name}' (ID: ${id}).`);
      } catch (e) {
        if (e instanceof EntityNotFoundError) {
          throw new CliExit(EXIT.FAILURE, `Namespace ID '${id}' not found.`);
        }
        throw e;
      }
      return EXIT.OK;
    }));

  ns.command("orphans")
    .description("List soft-deleted namespaces (read-only)")
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const list = await (await connect(ctx, cmd, registry))
        .listOrphanNamespaces();
      emit(ctx, g, list.map(nsJson), () => {
        if (list.length === 0) return ctx.io.out("No orphaned namespaces.");
        ctx.io.out(renderTable(
          ["Namespace ID", "Name", "Deleted At"],
          list.map((n) => [n.namespaceId, n.name, n.deletedAt ?? "-"]),
        ));
        ctx.io.out("");
        ctx.io.out(`Total: ${list.length} orphaned namespace(s)`);
      });
      return EXIT.OK;
    }));

  ns.command("purge")
    .description("Permanently delete all data of a soft-deleted namespace")
    .argument("<namespace-id>", "namespace ID (see 'namespace orphans')")
    .option("-y, --yes", "confirm")
    .action(action(ctx, async (cmd) => {
      const id = argAt(cmd, 0);
      requireYes(
        cmd.opts<{ yes?: boolean }>().yes,
        `permanently delete all data of namespace ID '${id}'`,
      );
      const repo = await connect(ctx, cmd, registry);
      const deleted = await repo.purgeNamespace(id);
      ctx.io.out(
        `Purged namespace '${id}'. ${deleted} item(s) permanently deleted.`,
      );
      return EXIT.OK;
    }));
  return ns;
}
