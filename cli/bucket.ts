/**
 * `bucket reset`: delete an entity's bucket items (one resource or all);
 * they are recreated full on the next acquire (spec 06 §7, v0.10 keys).
 *
 * @module
 */
import { Command } from "commander";
import {
  action,
  argAt,
  type CliContext,
  connect,
  emit,
  EXIT,
  resolveGlobals,
} from "./_context.ts";
import { startProgress } from "./_progress.ts";

/** The `bucket` command group. */
export function makeBucketCommand(ctx: CliContext): Command {
  const bucket = new Command("bucket").description(
    "Repair token buckets",
  );
  bucket.command("reset")
    .description(
      "Delete the bucket items of an entity (every shard); they refill to capacity on the next acquire",
    )
    .argument("<entity-id>", "entity ID")
    .option("-r, --resource <resource>", "only this resource (default: all)")
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const id = argAt(cmd, 0);
      const { resource } = cmd.opts<{ resource?: string }>();
      const repo = await connect(ctx, cmd);
      // One resource at a time, so that an entity with many resources shows progress.
      const resources = resource !== undefined ? [resource] : [
        ...new Set((await repo.getEntityBuckets(id)).map((b) => b.resource)),
      ].sort();
      const progress = startProgress(ctx, {
        format: "Resetting buckets of {entity} {bar} {value}/{total} resources",
        total: resources.length,
        payload: { entity: id },
      }, g.output === "json");
      let n = 0;
      try {
        for (const [i, r] of resources.entries()) {
          n += await repo.resetBuckets(id, r);
          progress.update(i + 1);
        }
      } finally {
        progress.stop();
      }
      emit(ctx, g, {
        entityId: id,
        resource: resource ?? null,
        bucketsDeleted: n,
      }, () =>
        ctx.io.out(
          `Reset ${n} bucket item(s) for entity '${id}'${
            resource ? ` on resource '${resource}'` : ""
          }`,
        ));
      return EXIT.OK;
    }));
  return bucket;
}
