import assert from "node:assert/strict";
import { Limit } from "../mod.ts";
import type { LimitSet, LimitsState } from "./limits_manifest.ts";
import {
  type LiveState,
  type LiveTarget,
  planLimits,
  targetLabel,
} from "./limits_plan.ts";

const rpm = (n: number): LimitSet =>
  new Map([["rpm", Limit.perMinute("rpm", n)]]);
const live = (limits: LimitSet, managed: boolean): LiveTarget => ({
  limits,
  onUnavailable: null,
  managed,
  item: {},
});

function desired(partial: Partial<LimitsState> = {}): LimitsState {
  return {
    namespace: "default",
    system: null,
    resources: new Map(),
    entities: new Map(),
    ...partial,
  };
}

function state(partial: Partial<LiveState> = {}): LiveState {
  return {
    namespace: "default",
    system: null,
    resources: new Map(),
    entities: new Map(),
    ...partial,
  };
}

Deno.test("planLimits() deletes what the manifest created and dropped, and leaves the rest alone", () => {
  const now = state({
    resources: new Map([["managed", live(rpm(1), true)], [
      "by-hand",
      live(rpm(2), false),
    ]]),
    entities: new Map([["k", new Map([["r", live(rpm(3), false)]])]]),
  });
  const plan = planLimits(desired(), now);
  assert.deepEqual(
    plan.changes.map((c) => [c.action, targetLabel(c.target), c.reason]),
    [["delete", "resource managed", "removed"]],
  );
  assert.deepEqual(plan.unmanaged.map(targetLabel), [
    "resource by-hand",
    "entity k / r",
  ]);

  const pruned = planLimits(desired(), now, { prune: true });
  assert.deepEqual(
    pruned.changes.map((c) => [c.action, targetLabel(c.target), c.reason]),
    [
      ["delete", "resource by-hand", "pruned"],
      ["delete", "resource managed", "removed"],
      ["delete", "entity k / r", "pruned"],
    ],
  );
  assert.equal(pruned.unmanaged.length, 0);
});

Deno.test("planLimits() leaves matching targets unwritten, even when set by hand", () => {
  const plan = planLimits(
    desired({ resources: new Map([["r", rpm(5)]]) }),
    state({ resources: new Map([["r", live(rpm(5), false)]]) }),
  );
  assert.deepEqual([plan.changes.length, plan.unchanged], [0, 1]);
});

Deno.test("planLimits() treats a config item without limits as absent and plans on_unavailable alone", () => {
  const plan = planLimits(
    desired({ system: { limits: new Map(), onUnavailable: "block" } }),
    state({
      system: {
        ...live(new Map(), false),
        item: { audit_retention_days: { N: "30" } },
      },
      resources: new Map([["empty", live(new Map(), true)]]),
    }),
  );
  assert.equal(plan.changes.length, 1);
  const c = plan.changes[0];
  assert.equal(c?.action, "create");
  assert.deepEqual(c?.onUnavailable, { before: null, after: "block" });
  assert.deepEqual(c?.limits, []);
  assert.equal(plan.unmanaged.length, 0);
});

Deno.test("planLimits() lists only the limits that change, with before and after", () => {
  const plan = planLimits(
    desired({
      entities: new Map([[
        "k",
        new Map([[
          "r",
          new Map([
            ["rpm", Limit.perMinute("rpm", 10)],
            ["tpm", Limit.perMinute("tpm", 500)],
          ]),
        ]]),
      ]]),
    }),
    state({
      entities: new Map([[
        "k",
        new Map([[
          "r",
          live(
            new Map([
              ["rpm", Limit.perMinute("rpm", 10)],
              ["rph", Limit.perHour("rph", 9)],
            ]),
            true,
          ),
        ]]),
      ]]),
    }),
  );
  assert.deepEqual(
    plan.changes[0]?.limits.map((
      d,
    ) => [d.name, d.before?.capacity ?? null, d.after?.capacity ?? null]),
    [["rph", 9, null], ["tpm", null, 500]],
  );
  assert.equal(plan.changes[0]?.action, "update");
});
