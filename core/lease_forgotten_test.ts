import assert from "node:assert/strict";
import { Limit } from "../mod.ts";
import { createTestLimiter } from "../testing.ts";

Deno.test("Lease.consume() after a write on its item may have applied (the writer forgot the item) reads it again instead of refusing", async () => {
  let loseAnswer = false;
  const { limiter, source, store } = createTestLimiter({
    store: {
      hook: (phase, op) => {
        if (phase === "after" && op !== "read" && loseAnswer) {
          loseAnswer = false;
          throw Object.assign(new Error("injected: answer lost after apply"), {
            name: "InternalServerError",
          });
        }
      },
    },
    limiter: { onError: () => {}, onStranded: () => {} },
  });
  source.setSystemDefaults([Limit.perMinute("rpm", 100)]);
  const req = { entityId: "k", resource: "api", consume: { rpm: 1 } };
  const lease = await limiter.acquire(req);
  // Another acquire's write applies but its answer is lost: the limiter
  // reports it stranded and forgets what it knew of the item.
  loseAnswer = true;
  await assert.rejects(limiter.acquire({ ...req, onUnavailable: "block" }));
  // 98 tokens are left: the lease's consume must be admitted.
  await lease.consume({ rpm: 5 });
  await lease.commit();
  const item = store.get({
    ns: "default",
    entityId: "k",
    resource: "api",
    shard: 0,
  });
  assert.equal(item?.limits.get("rpm")?.tc, 7000n, "1 + 1 stranded + 5");
});
