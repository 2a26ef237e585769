import assert from "node:assert/strict";
import type { Clock } from "../clock.ts";
import { RateLimitExceeded } from "../errors.ts";
import { Limit } from "../limit.ts";
import { limitStatus } from "./plan.ts";
import { RefusalCache, refusalKey } from "./refusal_cache.ts";

const rps = Limit.custom("rps", 10, 10, 1);

function clockAt(ms: { now: number }): Clock {
  return { now: () => ms.now, sleep: () => Promise.resolve() };
}

function refusal(retryAfter: number): RateLimitExceeded {
  return new RateLimitExceeded([
    limitStatus("k", "api", rps, 0, 2000n, false, retryAfter),
  ]);
}

Deno.test("RefusalCache refuses as much or more until the Retry-After, shortened to the time left", () => {
  const t = { now: 1000 };
  const cache = new RefusalCache(10, clockAt(t));
  const key = refusalKey("ns", "k", "api");
  cache.remember(key, new Map([["rps", 2000n]]), refusal(2));
  t.now = 2500;
  assert.throws(() => cache.check(key, new Map([["rps", 3000n]])), (e) => {
    assert.ok(e instanceof RateLimitExceeded);
    assert.equal(e.violations[0]?.retryAfterSeconds, 0.5);
    return true;
  });
  cache.check(key, new Map([["rps", 1000n]])); // asks less: may fit
  cache.check(refusalKey("ns", "other", "api"), new Map([["rps", 3000n]]));
  t.now = 3000;
  cache.check(key, new Map([["rps", 3000n]])); // the wait is over
});

Deno.test("RefusalCache evicts the oldest refusal, and size 0 remembers none", () => {
  const t = { now: 0 };
  const consume = new Map([["rps", 2000n]]);
  const cache = new RefusalCache(2, clockAt(t));
  for (const id of ["a", "b", "c"]) {
    cache.remember(refusalKey("ns", id, "api"), consume, refusal(10));
  }
  cache.check(refusalKey("ns", "a", "api"), consume);
  assert.throws(
    () => cache.check(refusalKey("ns", "c", "api"), consume),
    RateLimitExceeded,
  );
  const off = new RefusalCache(0, clockAt(t));
  off.remember(refusalKey("ns", "a", "api"), consume, refusal(10));
  off.check(refusalKey("ns", "a", "api"), consume);
});
