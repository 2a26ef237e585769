/**
 * `audit list`: audit events of an entity, `$SYSTEM` or `$RESOURCE:{r}`.
 *
 * @module
 */
import { Command } from "commander";
import {
  action,
  type CliContext,
  connect,
  emit,
  EXIT,
  intInRange,
  renderTable,
  resolveGlobals,
} from "./_context.ts";

/** The `audit` command group. */
export function makeAuditCommand(ctx: CliContext): Command {
  const audit = new Command("audit").description("Read audit events");
  audit.command("list")
    .description("List audit events, newest first (read-only)")
    .requiredOption(
      "-e, --entity-id <id>",
      "entity ID, '$SYSTEM' or '$RESOURCE:{resource}'",
    )
    .option("--limit <n>", "maximum events", intInRange(1, 1000), 100)
    .option("--start-event-id <id>", "continue after this event ID")
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const o = cmd.opts<
        { entityId: string; limit: number; startEventId?: string }
      >();
      const events = await (await connect(ctx, cmd)).getAuditEvents(
        o.entityId,
        {
          limit: o.limit,
          ...(o.startEventId ? { startEventId: o.startEventId } : {}),
        },
      );
      emit(ctx, g, events, () => {
        if (events.length === 0) {
          return ctx.io.out(`No audit events found for entity: ${o.entityId}`);
        }
        ctx.io.out(`Audit Events for: ${o.entityId}`);
        ctx.io.out(renderTable(
          ["Timestamp", "Action", "Principal", "Resource"],
          events.map((e) => [
            e.timestamp,
            e.action,
            e.principal ?? "-",
            e.resource ?? "-",
          ]),
        ));
        ctx.io.out(`Total: ${events.length} events`);
        const last = events.at(-1);
        if (events.length === o.limit && last) {
          ctx.io.out(
            `More events may exist. Use --start-event-id ${last.eventId}`,
          );
        }
      });
      return EXIT.OK;
    }));
  return audit;
}
