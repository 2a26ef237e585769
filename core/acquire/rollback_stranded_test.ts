import assert from "node:assert/strict";
import { Limit, type StrandedCharge } from "../../mod.ts";
import { createTestLimiter } from "../../testing.ts";

class BodyError extends Error {}

/**
 * A limiter on the memory store whose next `n` writes fail: `before` they
 * apply with a throttle (certainly not applied), or `after` with the answer
 * lost.
 */
function setup() {
  const fail = { before: 0, after: 0 };
  const stranded: StrandedCharge[] = [];
  const errors: string[] = [];
  const { limiter, source, store } = createTestLimiter({
    store: {
      hook: (phase, op) => {
        if (op === "read") return;
        if (phase === "before" && fail.before > 0) {
          fail.before--;
          throw Object.assign(new Error("injected: throttled"), {
            name: "ThrottlingException",
          });
        }
        if (phase === "after" && fail.after > 0) {
          fail.after--;
          throw Object.assign(new Error("injected: answer lost after apply"), {
            name: "InternalServerError",
          });
        }
      },
    },
    limiter: {
      onError: (e, context) => errors.push(`${context}: ${String(e)}`),
      onStranded: (s) => stranded.push(s),
    },
  });
  source.setSystemDefaults([Limit.perMinute("rpm", 100)]);
  source.createEntity("parent");
  source.createEntity("child", { parentId: "parent", cascade: true });
  const tc = (entityId: string): bigint | null | undefined =>
    store.get({ ns: source.namespaceId, entityId, resource: "api", shard: 0 })
      ?.limits.get("rpm")?.tc;
  return { limiter, fail, stranded, errors, tc };
}

const failing = () => {
  throw new BodyError();
};

Deno.test("a callback's rollback that fails before it applies reports the tokens it leaves charged as stranded", async () => {
  const { limiter, fail, stranded, errors, tc } = setup();
  const req = { entityId: "k", resource: "api", consume: { rpm: 2 } };
  await limiter.acquire(req, () => {}); // the bucket exists and is known
  assert.equal(tc("k"), 2000n);
  let bodyRan = false;
  await assert.rejects(
    limiter.acquire(req, () => {
      bodyRan = true;
      fail.before = 1; // the rollback's give-back is throttled
      failing();
    }),
    BodyError,
    "the body's error reaches the caller",
  );
  assert.ok(bodyRan);
  // Not given back, and the caller cannot retry: the charge is reported.
  assert.equal(tc("k"), 4000n, "the give-back did not apply");
  assert.equal(errors.length, 1, errors.join("; "));
  assert.deepEqual(stranded.map((s) => [s.kind, s.entityId, s.amounts]), [
    ["giveback", "k", { rpm: 2 }],
  ]);
  // Every charge is committed (2 tokens), given back or reported (2).
  const reported = stranded.reduce((a, s) => a + (s.amounts["rpm"] ?? 0), 0);
  assert.equal(tc("k"), BigInt(2 + reported) * 1000n);
});

Deno.test("a callback's cascade rollback reports only the side that was not given back", async () => {
  const { limiter, fail, stranded, tc } = setup();
  const req = { entityId: "child", resource: "api", consume: { rpm: 1 } };
  await limiter.acquire(req, () => {});
  await assert.rejects(
    limiter.acquire(req, () => {
      fail.before = 1; // one of the two give-backs (one per item)
      failing();
    }),
    BodyError,
  );
  const charged = [tc("child"), tc("parent")].filter((x) => x === 2000n);
  assert.equal(charged.length, 1, "one side was given back, one was not");
  const side = tc("child") === 2000n ? "child" : "parent";
  assert.deepEqual(stranded.map((s) => [s.kind, s.entityId, s.amounts]), [
    ["giveback", side, { rpm: 1 }],
  ]);
});

Deno.test("a callback's rollback whose answer was lost after it applied is reported once, not again", async () => {
  const { limiter, fail, stranded, tc } = setup();
  const req = { entityId: "k", resource: "api", consume: { rpm: 1 } };
  await limiter.acquire(req, () => {});
  await assert.rejects(
    limiter.acquire(req, () => {
      fail.after = 1;
      failing();
    }),
    BodyError,
  );
  assert.equal(tc("k"), 1000n, "the give-back applied (its answer was lost)");
  assert.deepEqual(stranded.map((s) => [s.kind, s.amounts]), [
    ["giveback", { rpm: 1 }],
  ]);
});

Deno.test("a callback's rollback that succeeds reports nothing", async () => {
  const { limiter, stranded, errors, tc } = setup();
  const req = { entityId: "k", resource: "api", consume: { rpm: 1 } };
  await limiter.acquire(req, () => {});
  await assert.rejects(limiter.acquire(req, failing), BodyError);
  assert.equal(tc("k"), 1000n);
  assert.deepEqual(stranded, []);
  assert.deepEqual(errors, []);
});
