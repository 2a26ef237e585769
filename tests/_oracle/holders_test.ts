import assert from "node:assert/strict";
import fc from "fast-check";
import { checkHolders, type HolderOp } from "./holders.ts";

function admitted(
  id: string,
  invoke: number,
  response: number,
  release: number | null,
  leaseMs = 100,
): HolderOp {
  return {
    id,
    invoke,
    response,
    leaseMs,
    outcome: "admitted",
    releaseInvoke: release,
    releaseDone: release === null ? null : release + 1,
  };
}

Deno.test("checkHolders() flags more than max certain holders at one instant", () => {
  const r = checkHolders([
    admitted("a", 0, 2, 50),
    admitted("b", 1, 3, 60),
    admitted("c", 4, 6, 70),
  ], 2);
  assert.equal(r.ok, false);
  assert.equal(r.overHeld[0]?.at, 7);
  assert.deepEqual([...(r.overHeld[0]?.holders ?? [])].sort(), ["a", "b", "c"]);
});

Deno.test("checkHolders() frees a holder at its deadline (invoke + leaseMs) and at its release", () => {
  // a never releases (crashed) but its lease ended at 100; b released at 30.
  const r = checkHolders([
    admitted("a", 0, 2, null, 100),
    admitted("b", 1, 3, 30),
    admitted("c", 31, 35, 90),
    admitted("d", 100, 104, 150),
  ], 2);
  assert.ok(r.ok, JSON.stringify(r));
});

Deno.test("checkHolders() flags a refusal while fewer than max may have held a slot, and accepts one while the limit may have been full", () => {
  const refused = (id: string, invoke: number, response: number): HolderOp => ({
    id,
    invoke,
    response,
    leaseMs: 100,
    outcome: "refused",
  });
  const base = [admitted("a", 0, 2, 50), admitted("b", 1, 3, 60)];
  assert.ok(checkHolders([...base, refused("r1", 10, 12)], 2).ok);
  const r = checkHolders([...base, refused("r2", 70, 72)], 2);
  assert.deepEqual(r.unjustified, ["r2"]);
  // A call refused by a rate limit may have held a slot during its call.
  const other: HolderOp = {
    id: "o",
    invoke: 69,
    response: 73,
    leaseMs: 100,
    outcome: "refused_other",
  };
  assert.ok(
    checkHolders([
      ...base,
      admitted("x", 65, 66, 80),
      other,
      refused("r3", 70, 72),
    ], 2).ok,
  );
});

Deno.test("checkHolders() never flags sequential histories of an ideal slot table", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 4 }),
      fc.array(
        fc.record({
          gap: fc.integer({ min: 0, max: 30 }),
          hold: fc.integer({ min: 1, max: 150 }),
          crash: fc.boolean(),
        }),
        { maxLength: 40 },
      ),
      (max, calls) => {
        const leaseMs = 100;
        const slots: { until: number }[] = [];
        const ops: HolderOp[] = [];
        let t = 0;
        calls.forEach((c, i) => {
          t += c.gap;
          const live = slots.filter((s) => s.until > t);
          slots.length = 0;
          slots.push(...live);
          if (live.length >= max) {
            ops.push({
              id: `r${i}`,
              invoke: t,
              response: t,
              leaseMs,
              outcome: "refused",
            });
            return;
          }
          const release = c.crash || c.hold >= leaseMs ? null : t + c.hold;
          slots.push({ until: release ?? t + leaseMs });
          ops.push(admitted(`a${i}`, t, t, release, leaseMs));
        });
        const r = checkHolders(ops, max);
        assert.ok(r.ok, JSON.stringify(r));
      },
    ),
    { numRuns: 300 },
  );
});
