/**
 * `bucket reset`: delete an entity's bucket items (one resource or all);
 * they are recreated full on the next acquire (spec 06 §7, v0.10 keys).
 *
 * @module
 */
import { Command } from "commander";
import { action, argAt, type CliContext, connect, EXIT } from "./_context.ts";

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
      const id = argAt(cmd, 0);
      const { resource } = cmd.opts<{ resource?: string }>();
      const n = await (await connect(ctx, cmd)).resetBuckets(id, resource);
      ctx.io.out(
        `Reset ${n} bucket item(s) for entity '${id}'${
          resource ? ` on resource '${resource}'` : ""
        }`,
      );
      return EXIT.OK;
    }));
  return bucket;
}
