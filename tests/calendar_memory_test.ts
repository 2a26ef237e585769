/**
 * The calendar-quota oracle (`tests/_oracle/calendar_drive.ts`) on the
 * memory store: random histories across window ends, DST changes and month
 * ends, verdicts and balances equal to the ideal calendar quota.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { RateLimiter } from "../mod.ts";
import { MemoryBucketStore } from "../testing.ts";
import { MemoryLimiterSource } from "../core/store/memory_limiter_source.ts";
import {
  calendarScenarioArb,
  driveCalendar,
} from "./_oracle/calendar_drive.ts";

function settableClock() {
  let t = 0;
  return {
    now: () => t,
    set: (v: number) => {
      t = v;
    },
    sleep: (ms: number) => {
      t += ms;
      return Promise.resolve();
    },
  };
}

Deno.test("calendar quotas on the memory store: every verdict and balance equals the ideal calendar quota", async () => {
  let resets = 0;
  let refused = 0;
  await fc.assert(
    fc.asyncProperty(calendarScenarioArb(), async (sc) => {
      const clock = settableClock();
      const store = new MemoryBucketStore();
      const source = new MemoryLimiterSource(store, { clock });
      const limiters = [0, 1].map(() =>
        new RateLimiter(source, {
          bucketStore: store,
          refusalCacheSize: 0,
          onError: () => {},
        })
      );
      const r = await driveCalendar(sc, {
        limiters,
        clock,
        setLimits: (id, limits) => source.setLimits(id, limits),
        createEntity: (id, parentId) => {
          source.createEntity(
            id,
            parentId ? { parentId, cascade: true } : {},
          );
        },
        read: (id) =>
          store.get({ ns: "default", entityId: id, resource: "api", shard: 0 }),
      });
      resets += r.resets;
      refused += r.refused;
    }),
    { numRuns: 150 },
  );
  // The histories did cross windows and did refuse.
  assert.ok(resets > 50, `${resets} window ends crossed`);
  assert.ok(refused > 50, `${refused} refusals`);
});
