/**
 * The calendar-quota oracle (`tests/_oracle/calendar_drive.ts`) on DynamoDB
 * Local: a bounded number of random histories (each in its own namespace of
 * one table), with the injected clock moved across window ends, DST changes
 * and month ends; every verdict and stored balance equals the ideal.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { RateLimiter } from "../../mod.ts";
import {
  calendarScenarioArb,
  driveCalendar,
} from "../_oracle/calendar_drive.ts";
import { freshRepo } from "./_harness.ts";

Deno.test("calendar quotas on DynamoDB Local: random histories match the ideal calendar quota", async () => {
  let t = Date.UTC(2026, 0, 1);
  const clock = {
    now: () => t,
    set: (v: number) => {
      t = v;
    },
    sleep: (ms: number, signal?: AbortSignal) => {
      signal?.throwIfAborted();
      t += ms;
      return Promise.resolve();
    },
  };
  await using env = await freshRepo({ clock });
  let run = 0;
  let resets = 0;
  await fc.assert(
    fc.asyncProperty(calendarScenarioArb(20), async (sc) => {
      const name = `cal-${run++}`;
      await env.repo.registerNamespace(name);
      const repo = await env.repo.namespace(name);
      const limiters = [0, 1].map(() =>
        new RateLimiter(repo, { refusalCacheSize: 0, onError: () => {} })
      );
      const r = await driveCalendar(sc, {
        limiters,
        clock,
        setLimits: (id, limits) => repo.setLimits(id, limits),
        createEntity: async (id, parentId) => {
          await repo.createEntity(
            id,
            parentId ? { parentId, cascade: true } : {},
          );
        },
        read: async (id) =>
          (await repo.getEntityBuckets(id)).find((b) => b.resource === "api") ??
            null,
      });
      resets += r.resets;
    }),
    {
      numRuns: 8,
      seed: Number(Deno.env.get("ZAEL_ORACLE_SEED") ?? Date.now() % 2 ** 31),
    },
  );
  assert.ok(resets > 0, "the histories crossed window ends");
});
