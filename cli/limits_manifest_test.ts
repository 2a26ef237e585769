import assert from "node:assert/strict";
import { Limit } from "../mod.ts";
import {
  formatIssue,
  type LimitsState,
  parseLimitsManifest,
  renderLimitsManifest,
  safeParseLimitsManifest,
} from "./limits_manifest.ts";

function issues(text: string): [number, number, string, string][] {
  const r = safeParseLimitsManifest(text);
  assert.equal(r.ok, false, "expected issues");
  return r.ok ? [] : r.issues.map((i) => [i.line, i.column, i.code, i.path]);
}

Deno.test("parseLimitsManifest() reads every level and both limit forms", () => {
  const m = parseLimitsManifest(
    `namespace: tenant-a
system:
  on_unavailable: block
  limits:
    rpm: {capacity: 1000}
    tpm: 10000/min:15000
resources:
  openai/gpt-4:
    limits:
      rpm: {capacity: 100, refill_amount: 10, refill_period: 6, burst: 150}
      rpd: 500/day
entities:
  key-1:
    resources:
      _default_: {limits: {rpm: 7}}
`,
    "m.yaml",
  );
  const dict = (l: Limit | undefined) =>
    l ? [l.capacity, l.refillAmount, l.refillPeriodSeconds] : null;
  assert.equal(m.namespace, "tenant-a");
  assert.equal(m.namespaceLine, 1);
  assert.equal(m.system?.onUnavailable, "block");
  assert.deepEqual(dict(m.system?.limits.get("rpm")), [1000, 1000, 60]);
  assert.deepEqual(dict(m.system?.limits.get("tpm")), [15000, 10000, 60]);
  const gpt = m.resources.get("openai/gpt-4");
  assert.deepEqual(dict(gpt?.get("rpm")), [150, 10, 6]);
  assert.deepEqual(dict(gpt?.get("rpd")), [500, 500, 86400]);
  assert.deepEqual(
    dict(m.entities.get("key-1")?.get("_default_")?.get("rpm")),
    [7, 7, 60],
  );
});

Deno.test("safeParseLimitsManifest() reports every problem with line, column, code and path", () => {
  assert.deepEqual(
    issues(`system:
  on_unavailable: maybe
  limits: {}
resources:
  "#bad": {limits: {rpm: 1}}
  gpt:
    limits:
      wcu: {capacity: 1}
      rpm: {capacity: 1.5, refill_period: 0, colour: red}
      tpm: {refill_amount: 5}
      rps: 10/fortnight
entities:
  key-1: {resources: {}}
  key-2: {}
extra: 1
`),
    [
      [2, 19, "INVALID_VALUE", "system.on_unavailable"],
      [3, 11, "EMPTY", "system.limits"],
      [5, 3, "INVALID_VALUE", 'resources."#bad"'],
      [8, 7, "INVALID_VALUE", "resources.gpt.limits.wcu"],
      [9, 23, "INVALID_VALUE", "resources.gpt.limits.rpm.capacity"],
      [9, 43, "INVALID_VALUE", "resources.gpt.limits.rpm.refill_period"],
      [9, 46, "UNKNOWN_KEY", "resources.gpt.limits.rpm.colour"],
      [10, 12, "MISSING_KEY", "resources.gpt.limits.tpm.capacity"],
      [11, 12, "INVALID_VALUE", "resources.gpt.limits.rps"],
      [13, 22, "EMPTY", "entities.key-1.resources"],
      [14, 10, "MISSING_KEY", "entities.key-2.resources"],
      [15, 1, "UNKNOWN_KEY", "extra"],
    ],
  );
});

Deno.test("safeParseLimitsManifest() reports YAML syntax, a non-mapping and duplicate keys", () => {
  assert.deepEqual(issues("- a\n- b\n"), [[1, 1, "NOT_A_MAPPING", ""]]);
  assert.deepEqual(
    issues(
      "resources:\n  gpt: {limits: {rpm: 1}}\n  gpt: {limits: {rpm: 2}}\n",
    ),
    [[3, 3, "YAML_SYNTAX", ""]],
  );
  const r = safeParseLimitsManifest("system: {limits: [\n");
  assert.ok(!r.ok && r.issues.every((i) => i.code === "YAML_SYNTAX"));
});

Deno.test("formatIssue() shows the file position, the path, the message and a caret", () => {
  const r = safeParseLimitsManifest(
    "system:\n  limits:\n    rpm: {capacity: 0}\n",
  );
  assert.ok(!r.ok);
  assert.equal(
    formatIssue("limits.yaml", r.issues[0] as never),
    "limits.yaml:3:21: system.limits.rpm.capacity: expected a positive whole number, got 0\n" +
      "    3 |     rpm: {capacity: 0}\n" +
      "      |                     ^",
  );
});

Deno.test("renderLimitsManifest() output parses back to the same limits", () => {
  const state: LimitsState = {
    namespace: "default",
    system: { limits: new Map(), onUnavailable: "allow" },
    resources: new Map([[
      "a/b",
      new Map([["tpm", new Limit("tpm", 15, 10, 7)]]),
    ]]),
    entities: new Map([[
      "user@example.com",
      new Map([["_default_", new Map([["rpm", Limit.perMinute("rpm", 3)]])]]),
    ]]),
  };
  const text = renderLimitsManifest(state, ["a header"]);
  assert.match(text, /^# a header\n/);
  const back = parseLimitsManifest(text, "x");
  assert.equal(back.system?.onUnavailable, "allow");
  assert.equal(back.system?.limits.size, 0);
  assert.deepEqual(back.resources.get("a/b")?.get("tpm")?.toDict(), {
    name: "tpm",
    capacity: 15,
    "refill_amount": 10,
    "refill_period_seconds": 7,
  });
  assert.equal(
    back.entities.get("user@example.com")?.get("_default_")?.get("rpm")
      ?.capacity,
    3,
  );
});
