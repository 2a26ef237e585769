import assert from "node:assert/strict";
import { Limit, RateLimiter, RateLimitExceeded } from "../../mod.ts";
import { freshRepo, manualClock } from "./_harness.ts";

Deno.test("acquire() admits up to capacity and then refuses", async () => {
  const clock = manualClock();
  await using env = await freshRepo({ clock });
  const limiter = new RateLimiter(env.repo);
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 3)]);
  for (let i = 0; i < 3; i++) {
    await limiter.acquire({
      entityId: "u1",
      resource: "api",
      consume: { rpm: 1 },
    }, () => {});
  }
  await assert.rejects(
    limiter.acquire(
      { entityId: "u1", resource: "api", consume: { rpm: 1 } },
      () => {},
    ),
    (e) => e instanceof RateLimitExceeded && e.retryAfterSeconds > 0,
  );
  // 20 s per token, from the end of the new bucket's 600 ms holdback.
  clock.advance(20_601);
  await limiter.acquire({
    entityId: "u1",
    resource: "api",
    consume: { rpm: 1 },
  }, () => {});
});
