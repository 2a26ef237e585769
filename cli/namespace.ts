/**
 * `namespace register|list|show|delete|recover|orphans|purge`. Every
 * subcommand works on the registry through the `default` namespace; `-N` is
 * not used. Only `register` registers.
 *
 * @module
 */
import { QueryCommand } from "@aws-sdk/client-dynamodb";
import { Command } from "commander";
import { type Item, str } from "../core/expr.ts";
import { pkSystem, RESERVED_NAMESPACE, SK } from "../core/keys.ts";
import { EntityNotFoundError, type NamespaceInfo } from "../mod.ts";
import {
  action,
  argAt,
  argsFrom,
  type CliContext,
  CliExit,
  connect,
  dynamoClient,
  emit,
  EXIT,
  type GlobalConfig,
  readVersionState,
  renderTable,
  requireYes,
  resolveGlobals,
} from "./_context.ts";
import { startProgress } from "./_progress.ts";

/**
 * The active registry entries of a pre-0.10 table, read directly (the
 * library does not open such a table). `upgrade` registers `default` there
 * before the data is migrated (seed 002 steps 1–2). `null` when the table
 * is not pre-0.10.
 */
async function legacyRegistry(
  ctx: CliContext,
  g: GlobalConfig,
): Promise<{ schemaVersion: string; list: NamespaceInfo[] } | null> {
  const client = dynamoClient(ctx, g);
  const state = await readVersionState(client, g.name);
  if (state.kind !== "legacy") return null;
  const items: Item[] = [];
  let start: Item | undefined;
  do {
    const res = await client.send(
      new QueryCommand({
        TableName: g.name,
        KeyConditionExpression: "PK = :pk AND begins_with(SK, :sk)",
        ExpressionAttributeValues: {
          ":pk": { S: pkSystem(RESERVED_NAMESPACE) },
          ":sk": { S: SK.NAMESPACE },
        },
        ConsistentRead: true,
        ...(start ? { ExclusiveStartKey: start } : {}),
      }),
    );
    items.push(...(res.Items ?? []));
    start = res.LastEvaluatedKey;
  } while (start);
  const list = items.filter((i) => str(i, "status") === "active").map((
    i,
  ): NamespaceInfo => ({
    name: str(i, "namespace_name") ?? "",
    namespaceId: str(i, "namespace_id") ?? "",
    status: str(i, "status") ?? "active",
    createdAt: str(i, "created_at"),
    deletedAt: str(i, "deleted_at"),
  })).sort((a, b) => a.name.localeCompare(b.name));
  return { schemaVersion: state.schemaVersion, list };
}

function legacyNote(ctx: CliContext, g: GlobalConfig, schema: string): void {
  ctx.io.err(
    `Note: table '${g.name}' still uses the pre-0.10 key layout (schema ${schema}); its data is not migrated yet ('zae-limiter migrate plan --name ${g.name}', then 'migrate apply --yes').`,
  );
}

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
      const json = ids.map(([name, namespaceId]) => ({ name, namespaceId }));
      emit(ctx, resolveGlobals(cmd), json.length === 1 ? json[0] : json, () => {
        if (ids.length === 1) {
          const [name, id] = ids[0] as [string, string];
          ctx.io.out(`Registered namespace '${name}': ${id}`);
        } else {
          ctx.io.out(`Registered ${ids.length} namespace(s):`);
          for (const [name, id] of ids) ctx.io.out(`  ${name}: ${id}`);
        }
      });
      return EXIT.OK;
    }));

  ns.command("list")
    .description("List active namespaces (read-only)")
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const legacy = await legacyRegistry(ctx, g);
      const list = legacy?.list ??
        await (await connect(ctx, cmd, registry)).listNamespaces();
      if (legacy) legacyNote(ctx, g, legacy.schemaVersion);
      emit(ctx, g, list.map(nsJson), () => {
        if (list.length === 0) {
          return ctx.io.out(
            legacy
              ? `No namespaces registered (run 'zae-limiter upgrade --name ${g.name}' to register 'default').`
              : "No namespaces registered.",
          );
        }
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
      const legacy = await legacyRegistry(ctx, g);
      const info = legacy
        ? legacy.list.find((n) => n.name === name) ?? null
        : await (await connect(ctx, cmd, registry)).getNamespace(name);
      if (legacy) legacyNote(ctx, g, legacy.schemaVersion);
      if (!info) {
        throw new CliExit(
          EXIT.FAILURE,
          legacy
            ? `Namespace '${name}' not found (on a pre-0.10 table, 'zae-limiter upgrade --name ${g.name}' registers 'default').`
            : `Namespace '${name}' not found.`,
        );
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
      emit(
        ctx,
        resolveGlobals(cmd),
        { name, deleted: true },
        () =>
          ctx.io.out(
            `Namespace '${name}' deleted (data orphaned, recoverable).`,
          ),
      );
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
        emit(
          ctx,
          resolveGlobals(cmd),
          { name, namespaceId: id, recovered: true },
          () => ctx.io.out(`Recovered namespace '${name}' (ID: ${id}).`),
        );
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
      const g = resolveGlobals(cmd);
      const repo = await connect(ctx, cmd, registry);
      const progress = startProgress(ctx, {
        format: "Purging namespace {id}: {value} item(s) deleted",
        payload: { id },
      }, g.output === "json");
      let deleted: number;
      try {
        deleted = await repo.purgeNamespace(id, (n) => progress.update(n));
      } finally {
        progress.stop();
      }
      emit(
        ctx,
        g,
        { namespaceId: id, purged: true, itemsDeleted: deleted },
        () =>
          ctx.io.out(
            `Purged namespace '${id}'. ${deleted} item(s) permanently deleted.`,
          ),
      );
      return EXIT.OK;
    }));
  return ns;
}
