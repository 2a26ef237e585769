import assert from "node:assert/strict";
import {
  Limit,
  RateLimiter,
  RateLimitExceeded,
  Repository,
} from "../../mod.ts";
import { sleep } from "../../core/clock.ts";
import { localClient, tableName } from "./_harness.ts";

const CLIENTS = 64;
const ATTEMPTS_PER_CLIENT = 3;
const T0 = Date.UTC(2026, 0, 15, 12, 0, 0);
/** Time stands still (no refill); backoff sleeps are real. */
const frozen = { now: () => T0, sleep };

interface Outcome {
  admitted: number;
  refused: number;
  errors: unknown[];
}

async function hammer(
  options: { speculative: boolean; cascade: boolean },
): Promise<Outcome> {
  const { client } = await localClient();
  const stack = tableName("conc");
  const admin = await Repository.open({
    client,
    stack,
    provision: true,
    clock: frozen,
  });
  try {
    // One token per day: nothing refills while the test runs.
    const hundred = [Limit.custom("rpm", 100, 1, 86_400)];
    const plenty = [Limit.custom("rpm", 100_000, 1, 86_400)];
    const entities: string[] = [];
    if (options.cascade) {
      await admin.createEntity("parent");
      await admin.setLimits("parent", hundred, { resource: "api" });
      for (let i = 0; i < 4; i++) {
        await admin.createEntity(`child-${i}`, {
          parentId: "parent",
          cascade: true,
        });
        await admin.setLimits(`child-${i}`, plenty, { resource: "api" });
        entities.push(`child-${i}`);
      }
    } else {
      await admin.setLimits("solo", hundred, { resource: "api" });
      entities.push("solo");
    }
    const outcome: Outcome = { admitted: 0, refused: 0, errors: [] };
    // Each simulated client has its own repository: its own caches, as separate processes would.
    const limiters = await Promise.all(
      Array.from(
        { length: CLIENTS },
        async () =>
          new RateLimiter(
            await Repository.open({ client, stack, clock: frozen }),
            {
              speculativeWrites: options.speculative,
              // This test is about exactness under contention, not latency:
              // on a loaded 2-core machine 64 clients on one parent can take
              // longer than the default 3 s deadline.
              timeoutMs: 60_000,
            },
          ),
      ),
    );
    await Promise.all(limiters.map(async (limiter, i) => {
      for (let a = 0; a < ATTEMPTS_PER_CLIENT; a++) {
        const entityId = entities[(i + a) % entities.length] as string;
        try {
          await limiter.acquire({
            entityId,
            resource: "api",
            consume: { rpm: 1 },
          }, () => {});
          outcome.admitted++;
        } catch (e) {
          if (e instanceof RateLimitExceeded) outcome.refused++;
          else outcome.errors.push(e);
        }
      }
    }));
    return outcome;
  } finally {
    await admin.deleteTable().catch(() => {});
    client.destroy();
  }
}

for (const speculative of [true, false]) {
  for (const cascade of [false, true]) {
    const path = speculative ? "fast" : "slow";
    const shape = cascade ? "with cascade to one parent" : "on one bucket";
    Deno.test(`acquire() admits exactly the capacity under ${CLIENTS} concurrent clients (${path} path, ${shape})`, async () => {
      const r = await hammer({ speculative, cascade });
      assert.deepEqual(r.errors, []);
      assert.equal(
        r.admitted,
        100,
        `admitted ${r.admitted}, refused ${r.refused}`,
      );
      assert.equal(r.refused, CLIENTS * ATTEMPTS_PER_CLIENT - 100);
    });
  }
}
