/**
 * The concurrency-limit and lease-deadline oracle on DynamoDB Local: a
 * bounded number of random histories (several limiters, each with its own
 * Repository and caches, like separate processes; acquires held for random
 * times, some past their deadline, some never ended) judged by the holders
 * checker (never more than `max` unexpired holders, refusals only when the
 * limit may have been full) and the ideal-bucket checker on the rate limit
 * (with the stored `tc`: nothing adjusted or given back after a deadline).
 * Every client uses the real clock as is (`clock: systemClock`), so one
 * clock orders the history.
 */
import assert from "node:assert/strict";
import type { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import fc from "fast-check";
import { Limit, RateLimiter, Repository, systemClock } from "../../mod.ts";
import {
  judge,
  runConcurrencyHistory,
  scenarioArb,
} from "../_oracle/concurrency_drive.ts";
import { faultyClient } from "./_faults.ts";
import { freshRepo } from "./_harness.ts";
import { num, rawBucket } from "./_stored.ts";
import { seededRandom } from "../../dev/_seeded_random.ts";

/** A history of limiters on `client` (separate repositories and caches) sharing the table of `env`. */
function sharedHistory(
  sc: Parameters<typeof runConcurrencyHistory>[0],
  env: { client: DynamoDBClient; repo: Repository },
  client: DynamoDBClient,
): ReturnType<typeof runConcurrencyHistory> {
  return runConcurrencyHistory(sc, {
    perWorker: 5,
    makeLimiter: async (i) =>
      new RateLimiter(
        await Repository.open({
          client,
          stack: env.repo.tableName,
          clock: systemClock,
        }),
        {
          onError: () => {},
          refusalCacheSize: 0,
          random: seededRandom(sc.seed + i),
        },
      ),
    finalTc: async () =>
      BigInt(
        num(await rawBucket(env.client, env.repo, "solo", "api"), "b_rpm_tc"),
      ),
  });
}

Deno.test("DynamoDB Local: concurrency limits never hold more than max unexpired holders, refuse only when full, and nothing moves after a lease deadline", async () => {
  await fc.assert(
    fc.asyncProperty(
      scenarioArb.map((sc) => ({
        ...sc,
        faults: false, // the slot store is DynamoDB here: latency is real
        leaseMs: sc.leaseMs * 3, // DynamoDB Local answers in milliseconds, not microseconds
      })),
      async (sc) => {
        await using env = await freshRepo({ clock: systemClock });
        await env.repo.setSystemDefaults([Limit.custom("rpm", 6, 6, 1)]);
        judge(sc, await sharedHistory(sc, env, env.client));
      },
    ),
    { numRuns: 4 },
  );
});

Deno.test("DynamoDB Local with 500s before and after writes apply: concurrency limits and lease deadlines still pass both checkers", async () => {
  let injected = 0;
  await fc.assert(
    fc.asyncProperty(
      scenarioArb.map((sc) => ({
        ...sc,
        faults: true,
        leaseMs: sc.leaseMs * 3,
      })),
      async (sc) => {
        await using env = await freshRepo({ clock: systemClock });
        await env.repo.setSystemDefaults([Limit.custom("rpm", 6, 6, 1)]);
        using fcl = await faultyClient({ maxAttempts: 3, seed: sc.seed });
        // Slot takes and bucket writes fail now and then (releases do not:
        // a lost release is reported to onError and the slot frees at its
        // deadline, which this history cannot tell from the client).
        const writes = (input: Record<string, unknown>) =>
          !String(input["UpdateExpression"] ?? "").startsWith("REMOVE");
        for (const kind of ["beforeApply", "afterApply"] as const) {
          fcl.faults.inject({
            command: "UpdateItem",
            match: writes,
            probability: 0.04,
            fault: { kind, error: "InternalServerError" },
          });
        }
        judge(sc, await sharedHistory(sc, env, fcl.client));
        injected += fcl.faults.log.length;
      },
    ),
    { numRuns: 3 },
  );
  assert.ok(injected > 0, "faults were injected");
});
