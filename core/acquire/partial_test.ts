import assert from "node:assert/strict";
import fc from "fast-check";
import {
  RateLimitExceeded,
  RequestExceedsCapacity,
  ValidationError,
} from "../errors.ts";
import { Limit } from "../limit.ts";
import type { LimitStatus } from "../models.ts";
import {
  acquirePartial,
  clampToCapacity,
  MAX_PARTIAL_ATTEMPTS,
  pickGrant,
  resolveMin,
  statusesForMin,
} from "./partial.ts";

const K = 1000n;

function milli(o: Record<string, number>): Map<string, bigint> {
  return new Map(Object.entries(o).map(([k, v]) => [k, BigInt(v) * K]));
}

function status(
  limitName: string,
  available: number,
  requested: number,
  entityId = "e",
): LimitStatus {
  const exceeded = requested > 0 && available < requested;
  return {
    entityId,
    resource: "r",
    limitName,
    limit: Limit.perMinute(limitName, 10_000),
    available,
    requested,
    exceeded,
    // 10 000 per minute: 1 token per 6 ms.
    retryAfterSeconds: exceeded ? (requested - available) * 0.006 : 0,
  };
}

Deno.test("resolveMin() returns millitokens for valid minimums", () => {
  assert.deepEqual(
    resolveMin({ tpm: 500 }, milli({ tpm: 4000, rpm: 1 })),
    milli({ tpm: 500 }),
  );
  assert.deepEqual(resolveMin({}, milli({ tpm: 1 })), new Map());
});

Deno.test("resolveMin() names the field of a bad minimum", () => {
  const ask = milli({ tpm: 4000 });
  const cases: [unknown, string][] = [
    [null, "min"],
    [[1], "min"],
    [{ rpm: 1 }, "min.rpm"],
    [{ tpm: 4001 }, "min.tpm"],
    [{ tpm: -1 }, "min.tpm"],
    [{ tpm: 1.5 }, "min.tpm"],
    [{ tpm: NaN }, "min.tpm"],
    [{ tpm: "5" }, "min.tpm"],
  ];
  for (const [min, field] of cases) {
    assert.throws(() => resolveMin(min, ask), (e: unknown) => {
      assert.ok(e instanceof ValidationError);
      assert.equal(e.code, "VALIDATION_FAILED");
      assert.equal(e.field, field, JSON.stringify(min));
      return true;
    });
  }
});

Deno.test("pickGrant() shrinks a refused flexible limit to the least available over entity and parent", () => {
  const tried = milli({ tpm: 4000, rpm: 1 });
  const min = milli({ tpm: 500 });
  const next = pickGrant(tried, min, [
    status("tpm", 3000, 4000, "child"),
    status("rpm", 5, 1, "child"),
    status("tpm", 1200, 4000, "parent"),
  ]);
  assert.deepEqual(next, milli({ tpm: 1200, rpm: 1 }));
});

Deno.test("pickGrant() gives up when a fixed limit refused or a flexible one has less than min", () => {
  const tried = milli({ tpm: 4000, rpm: 1 });
  const min = milli({ tpm: 500 });
  assert.equal(
    pickGrant(tried, min, [status("tpm", 3000, 4000), status("rpm", 0, 1)]),
    null,
  );
  assert.equal(pickGrant(tried, min, [status("tpm", 499, 4000)]), null);
  assert.equal(pickGrant(tried, min, [status("tpm", -20, 4000)]), null);
  // min equal to the ask: that limit cannot shrink.
  assert.equal(
    pickGrant(milli({ tpm: 500 }), min, [status("tpm", 300, 500)]),
    null,
  );
});

const statusesArb = fc.array(
  fc.record({
    name: fc.constantFrom("a", "b", "c"),
    available: fc.integer({ min: -50, max: 200 }),
    entity: fc.constantFrom("child", "parent"),
  }),
  { maxLength: 6 },
);

Deno.test("pickGrant() never asks more than tried nor less than min, and only what the statuses showed for a refused limit", () => {
  fc.assert(
    fc.property(
      fc.record({
        ask: fc.record({
          a: fc.integer({ min: 0, max: 150 }),
          b: fc.integer({ min: 0, max: 150 }),
          c: fc.integer({ min: 0, max: 150 }),
        }),
        minFrac: fc.record({
          a: fc.option(fc.double({ min: 0, max: 1, noNaN: true })),
          b: fc.option(fc.double({ min: 0, max: 1, noNaN: true })),
        }),
      }),
      statusesArb,
      ({ ask, minFrac }, raw) => {
        const tried = milli(ask);
        const minObj: Record<string, number> = {};
        for (const [n, f] of Object.entries(minFrac)) {
          if (f !== null) {
            minObj[n] = Math.floor(f * (ask[n as "a" | "b"] ?? 0));
          }
        }
        const min = milli(minObj);
        const statuses = raw.map((r) =>
          status(r.name, r.available, ask[r.name as "a"], r.entity)
        );
        const next = pickGrant(tried, min, statuses);
        const refused = new Set(
          statuses.filter((s) => s.exceeded).map((s) => s.limitName),
        );
        const least = (n: string): bigint =>
          statuses.filter((s) => s.limitName === n).reduce(
            (m, s) => BigInt(s.available) * K < m ? BigInt(s.available) * K : m,
            tried.get(n) ?? 0n,
          );
        const fits = [...refused].every((n) => {
          const m = min.get(n);
          return m !== undefined && m < (tried.get(n) ?? 0n) &&
            least(n) >= m;
        });
        if (!fits) {
          assert.equal(next, null);
          return;
        }
        assert.ok(next);
        for (const [n, t] of tried) {
          const v = next.get(n) as bigint;
          assert.ok(v <= t, `${n}: ${v} <= ${t}`);
          assert.ok(v >= (min.get(n) ?? t), `${n}: ${v} >= min`);
          assert.equal(v % K, 0n, "whole tokens");
          if (refused.has(n)) assert.equal(v, least(n));
          else assert.equal(v, t);
        }
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("clampToCapacity() clamps a flexible ask to the capacity and refuses when min does not fit", () => {
  const tried = milli({ tpm: 4000, rpm: 1 });
  const min = milli({ tpm: 500 });
  assert.deepEqual(
    clampToCapacity(tried, min, [status("tpm", 3000, 4000)]),
    milli({ tpm: 3000, rpm: 1 }),
  );
  assert.equal(clampToCapacity(tried, min, [status("tpm", 400, 4000)]), null);
  assert.equal(clampToCapacity(tried, min, [status("rpm", 0, 1)]), null);
});

Deno.test("statusesForMin() restates a refusal for min: the tried Retry-After less the refill of the difference", () => {
  const [s] = statusesForMin(
    [status("tpm", 100, 4100)],
    milli({ tpm: 4100 }),
    milli({ tpm: 500 }),
  );
  assert.ok(s);
  assert.equal(s.requested, 500);
  assert.equal(s.exceeded, true);
  // 4000 short took 24 s; 400 short takes 2.4 s.
  assert.ok(
    Math.abs(s.retryAfterSeconds - 2.4) < 1e-9,
    `${s.retryAfterSeconds}`,
  );
  // A delay before refill starts (a new bucket's holdback) stays in the wait.
  const held = status("tpm", 100, 4100);
  const [h] = statusesForMin(
    [{ ...held, retryAfterSeconds: held.retryAfterSeconds + 0.6 }],
    milli({ tpm: 4100 }),
    milli({ tpm: 500 }),
  );
  assert.ok(
    Math.abs((h?.retryAfterSeconds ?? 0) - 3.0) < 1e-9,
    `${h?.retryAfterSeconds}`,
  );
  const [ok] = statusesForMin(
    [status("tpm", 600, 4100)],
    milli({ tpm: 4100 }),
    milli({ tpm: 500 }),
  );
  assert.equal(ok?.exceeded, false);
  assert.equal(ok?.retryAfterSeconds, 0);
});

/** An attempt that admits amounts up to `avail` (millitokens per name) and refuses with statuses otherwise. */
function fakeAttempt(
  avail: Map<string, bigint>,
  capacity = new Map<string, bigint>(),
): {
  attempt: (c: ReadonlyMap<string, bigint>) => Promise<string>;
  tries: Map<string, bigint>[];
} {
  const tries: Map<string, bigint>[] = [];
  return {
    tries,
    attempt(c) {
      tries.push(new Map(c));
      const over = [...c].filter(([n, a]) =>
        capacity.has(n) && a > (capacity.get(n) as bigint)
      );
      if (over.length > 0) {
        return Promise.reject(
          new RequestExceedsCapacity(over.map(([n, a]) =>
            status(
              n,
              Number((capacity.get(n) as bigint) / K),
              Number(a / K),
            )
          )),
        );
      }
      const statuses = [...c].map(([n, a]) =>
        status(n, Number((avail.get(n) ?? 0n) / K), Number(a / K))
      );
      if (statuses.some((s) => s.exceeded)) {
        return Promise.reject(new RateLimitExceeded(statuses));
      }
      return Promise.resolve("lease");
    },
  };
}

Deno.test("acquirePartial() grants the ask when it fits, in one attempt", async () => {
  const f = fakeAttempt(milli({ tpm: 5000 }));
  const g = await acquirePartial(
    milli({ tpm: 4000 }),
    milli({ tpm: 500 }),
    f.attempt,
  );
  assert.deepEqual(g.granted, milli({ tpm: 4000 }));
  assert.equal(f.tries.length, 1);
});

Deno.test("acquirePartial() grants what is available between min and the ask", async () => {
  const f = fakeAttempt(milli({ tpm: 1700, rpm: 3 }));
  const g = await acquirePartial(
    milli({ tpm: 4000, rpm: 1 }),
    milli({ tpm: 500 }),
    f.attempt,
  );
  assert.equal(g.value, "lease");
  assert.deepEqual(g.granted, milli({ tpm: 1700, rpm: 1 }));
  assert.deepEqual(f.tries, [
    milli({ tpm: 4000, rpm: 1 }),
    milli({ tpm: 1700, rpm: 1 }),
  ]);
});

Deno.test("acquirePartial() refuses with statuses for min when even min does not fit", async () => {
  const f = fakeAttempt(milli({ tpm: 300 }));
  await assert.rejects(
    acquirePartial(milli({ tpm: 4000 }), milli({ tpm: 500 }), f.attempt),
    (e: unknown) => {
      assert.ok(e instanceof RateLimitExceeded);
      assert.equal(e.primaryViolation.requested, 500);
      assert.ok(e.retryAfterSeconds < 3, `${e.retryAfterSeconds}`);
      return true;
    },
  );
  assert.equal(f.tries.length, 1);
});

Deno.test("acquirePartial() clamps an ask over the capacity, and never-fits when min is over it", async () => {
  const f = fakeAttempt(milli({ tpm: 10_000 }), milli({ tpm: 2000 }));
  const g = await acquirePartial(
    milli({ tpm: 4000 }),
    milli({ tpm: 500 }),
    f.attempt,
  );
  assert.deepEqual(g.granted, milli({ tpm: 2000 }));
  const h = fakeAttempt(milli({ tpm: 10_000 }), milli({ tpm: 400 }));
  await assert.rejects(
    acquirePartial(milli({ tpm: 4000 }), milli({ tpm: 500 }), h.attempt),
    (e: unknown) => {
      assert.ok(e instanceof RequestExceedsCapacity);
      assert.equal(e.code, "REQUEST_EXCEEDS_CAPACITY");
      assert.equal(e.statuses[0]?.requested, 500);
      return true;
    },
  );
});

Deno.test("acquirePartial() stops after MAX_PARTIAL_ATTEMPTS refusals", async () => {
  let avail = 4000;
  const tries: bigint[] = [];
  // Every try finds 100 tokens fewer than the last refusal showed (contention).
  const attempt = (c: ReadonlyMap<string, bigint>): Promise<string> => {
    const a = c.get("tpm") as bigint;
    tries.push(a);
    avail -= 100;
    return Promise.reject(
      new RateLimitExceeded([status("tpm", avail, Number(a / K))]),
    );
  };
  await assert.rejects(
    acquirePartial(milli({ tpm: 5000 }), milli({ tpm: 500 }), attempt),
    RateLimitExceeded,
  );
  assert.equal(tries.length, MAX_PARTIAL_ATTEMPTS);
});

Deno.test("acquirePartial() passes other errors through", async () => {
  await assert.rejects(
    acquirePartial(
      milli({ tpm: 10 }),
      milli({ tpm: 1 }),
      () => Promise.reject(new Error("boom")),
    ),
    { message: "boom" },
  );
});
