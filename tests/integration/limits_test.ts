/**
 * Limits as code (`limits plan|apply|diff|export`) and resource capacity
 * (`Repository.getResourceCapacity`, `resource capacity`) on DynamoDB Local,
 * through the CLI in-process.
 */
import assert from "node:assert/strict";
import { GetItemCommand } from "@aws-sdk/client-dynamodb";
import { main } from "../../cli.ts";
import { Limit, RateLimiter, Repository } from "../../mod.ts";
import { pkBucket, SK } from "../../core/keys.ts";
import { parseLimitsManifest } from "../../cli/limits_manifest.ts";
import { planLimits } from "../../cli/limits_plan.ts";
import { applyLimitsPlan, readLiveLimits } from "../../cli/limits_store.ts";
import { endpoint, localClient, tableName } from "./_harness.ts";

interface Run {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

async function localTable(): Promise<
  & {
    table: string;
    dir: string;
    run(...argv: string[]): Promise<Run>;
    write(name: string, text: string): Promise<string>;
    repo(namespace?: string): Promise<Repository>;
  }
  & AsyncDisposable
> {
  const table = tableName("lim");
  const ep = await endpoint();
  const { client } = await localClient();
  const dir = await Deno.makeTempDir({ prefix: "zael-limits-" });
  const run = async (...argv: string[]): Promise<Run> => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(["--endpoint-url", ep, "--name", table, ...argv], {
      out: (t) => out.push(t),
      err: (t) => err.push(t),
      sleep: () => Promise.resolve(),
    }, {});
    return { code, out: out.join("\n"), err: err.join("\n") };
  };
  const deployed = await run("deploy");
  assert.equal(deployed.code, 0, deployed.err);
  return {
    table,
    dir,
    run,
    async write(name, text) {
      const path = `${dir}/${name}`;
      await Deno.writeTextFile(path, text);
      return path;
    },
    repo: (namespace = "default") =>
      Repository.open({ client, stack: table, namespace }),
    async [Symbol.asyncDispose]() {
      await run("delete", "--yes");
      client.destroy();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

const MANIFEST = `namespace: default
system:
  on_unavailable: allow
  limits:
    rpm: {capacity: 1000}
resources:
  openai/gpt-4:
    limits:
      rpm: 100/min
      tpm: {capacity: 10000, burst: 15000}
  anthropic/claude:
    limits:
      rpm: {capacity: 50, refill_amount: 50, refill_period: 60}
entities:
  key-1:
    resources:
      _default_:
        limits:
          rpm: 10/min
      openai/gpt-4:
        limits:
          tpm: 2000/min
`;

Deno.test("limits plan, apply, diff and export round-trip a manifest", async () => {
  await using env = await localTable();
  const file = await env.write("limits.yaml", MANIFEST);

  const before = await env.run("limits", "diff", "-f", file);
  assert.equal(before.code, 1, before.err);
  assert.match(before.out, /Drift: 5 difference\(s\)/);

  const plan = await env.run("limits", "plan", "-f", file);
  assert.equal(plan.code, 0, plan.err);
  assert.match(
    plan.out,
    /\+ system\n\s+\+ rpm: 1,000\/min\n\s+\+ on_unavailable: allow/,
  );
  assert.match(
    plan.out,
    /\+ resource openai\/gpt-4\n\s+\+ rpm: 100\/min\n\s+\+ tpm: 10,000\/min \(burst: 15,000\)/,
  );
  assert.match(plan.out, /\+ entity key-1 \/ _default_\n\s+\+ rpm: 10\/min/);
  assert.match(
    plan.out,
    /Plan: 5 to create, 0 to update, 0 to delete; 0 unchanged\./,
  );

  const applied = await env.run(
    "limits",
    "apply",
    "-f",
    file,
    "--principal",
    "ci-run-7",
  );
  assert.equal(applied.code, 0, applied.err);
  assert.match(applied.out, /Applied: 5 created, 0 updated, 0 deleted\./);

  const repo = await env.repo();
  assert.deepEqual(
    (await repo.getResourceDefaults("openai/gpt-4")).map((l) => l.toDict()),
    [
      {
        name: "rpm",
        capacity: 100,
        "refill_amount": 100,
        "refill_period_seconds": 60,
      },
      {
        name: "tpm",
        capacity: 15000,
        "refill_amount": 10000,
        "refill_period_seconds": 60,
      },
    ],
  );
  const sys = await repo.getSystemDefaults();
  assert.equal(sys.onUnavailable, "allow");
  assert.deepEqual(sys.limits.map((l) => l.capacity), [1000]);
  assert.deepEqual((await repo.getLimits("key-1")).map((l) => l.capacity), [
    10,
  ]);
  assert.deepEqual(await repo.listResourcesWithDefaults(), [
    "anthropic/claude",
    "openai/gpt-4",
  ]);
  assert.deepEqual(await repo.listResourcesWithEntityConfigs(), [
    "_default_",
    "openai/gpt-4",
  ]);
  const events = await repo.getAuditEvents("key-1");
  assert.equal(events.length, 2);
  assert.deepEqual(
    events.map((e) => [e.action, e.principal, e.details["via"]]),
    [["limits_set", "ci-run-7", "limits apply"], [
      "limits_set",
      "ci-run-7",
      "limits apply",
    ]],
  );
  assert.equal((await repo.getAuditEvents("$SYSTEM")).length, 1);

  const clean = await env.run("limits", "diff", "-f", file);
  assert.equal(clean.code, 0, clean.out);
  assert.match(clean.out, /No drift: namespace 'default' matches/);
  const noop = await env.run("limits", "apply", "-f", file);
  assert.match(noop.out, /No changes: .*nothing written/);
  assert.equal(
    (await repo.getAuditEvents("key-1")).length,
    2,
    "no-op apply wrote nothing",
  );

  // An edit: a raised limit, a dropped resource, a new entity limit.
  const edited = await env.write(
    "edited.yaml",
    MANIFEST.replace("rpm: 100/min", "rpm: 200/min")
      .replace(/ {2}anthropic\/claude:\n.*\n.*\n/, "")
      .replace(
        "key-1:",
        "key-2:\n    resources:\n      _default_:\n        limits:\n          rpm: 5/min\n  key-1:",
      ),
  );
  const drift = await env.run(
    "--output",
    "json",
    "limits",
    "diff",
    "-f",
    edited,
  );
  assert.equal(drift.code, 1, drift.err);
  const report = JSON.parse(drift.out);
  assert.equal(report.drift, true);
  assert.deepEqual(report.summary, {
    create: 1,
    update: 1,
    delete: 1,
    unchanged: 3,
    unmanaged: 0,
  });
  const update = report.changes.find((c: { action: string }) =>
    c.action === "update"
  );
  assert.deepEqual(update.target, {
    level: "resource",
    resource: "openai/gpt-4",
  });
  assert.deepEqual(update.limits, [{
    name: "rpm",
    before: { capacity: 100, "refill_amount": 100, "refill_period": 60 },
    after: { capacity: 200, "refill_amount": 200, "refill_period": 60 },
  }]);
  const editPlan = await env.run("limits", "plan", "-f", edited);
  assert.match(
    editPlan.out,
    /~ resource openai\/gpt-4\n\s+~ rpm: 100\/min -> 200\/min/,
  );
  assert.ok(
    editPlan.out.includes(
      "- resource anthropic/claude   (removed from the manifest)",
    ),
    editPlan.out,
  );

  const refused = await env.run("limits", "apply", "-f", edited);
  assert.equal(refused.code, 2);
  assert.match(refused.err, /Refusing to delete 1 target\(s\) without --yes/);
  assert.equal(
    (await repo.getResourceDefaults("openai/gpt-4"))[0]?.capacity,
    100,
    "nothing written",
  );

  const second = await env.run("limits", "apply", "-f", edited, "--yes");
  assert.equal(second.code, 0, second.err);
  assert.match(second.out, /Applied: 1 created, 1 updated, 1 deleted\./);
  assert.deepEqual(await repo.listResourcesWithDefaults(), ["openai/gpt-4"]);
  assert.equal(
    (await repo.getResourceDefaults("openai/gpt-4"))[0]?.capacity,
    200,
  );
  assert.equal((await env.run("limits", "diff", "-f", edited)).code, 0);

  // Limits set outside the manifest are left alone, unless --prune.
  await repo.setLimits("key-9", [Limit.perMinute("rpm", 7)], {
    resource: "openai/gpt-4",
  });
  const alone = await env.run("limits", "diff", "-f", edited);
  assert.equal(alone.code, 0, alone.out);
  assert.ok(
    alone.out.includes(
      "(--prune deletes them):\n  entity key-9 / openai/gpt-4",
    ),
    alone.out,
  );
  const pruned = await env.run("limits", "diff", "-f", edited, "--prune");
  assert.equal(pruned.code, 1);
  assert.ok(
    pruned.out.includes(
      "- entity key-9 / openai/gpt-4   (not in the manifest; --prune)",
    ),
    pruned.out,
  );

  // Export writes the live state; applying it changes nothing.
  const exported = await env.run("limits", "export");
  assert.equal(exported.code, 0, exported.err);
  assert.match(exported.out, /^# Limits of namespace "default"/);
  assert.ok(
    exported.out.includes(
      "key-9:\n    resources:\n      openai/gpt-4:\n        limits:\n          rpm: { capacity: 7, refill_amount: 7, refill_period: 60 }",
    ),
    exported.out,
  );
  const exportFile = `${env.dir}/export.yaml`;
  const toFile = await env.run("limits", "export", "-f", exportFile);
  assert.match(toFile.out, /Exported 6 target\(s\) of namespace 'default'/);
  assert.equal(
    parseLimitsManifest(await Deno.readTextFile(exportFile), "x").entities.size,
    3,
  );
  const roundTrip = await env.run(
    "limits",
    "apply",
    "-f",
    exportFile,
    "--prune",
  );
  assert.equal(roundTrip.code, 0, roundTrip.err);
  assert.match(roundTrip.out, /No changes: .*nothing written/);
  assert.equal(
    (await env.run("limits", "diff", "-f", exportFile, "--prune")).code,
    0,
  );
});

Deno.test("limits commands reject a bad manifest with every problem and its line, writing nothing", async () => {
  await using env = await localTable();
  const file = await env.write(
    "bad.yaml",
    `namespace: default
system:
  limits:
    rpm: {capacity: -5}
resouces:
  gpt:
    limits: {tpm: {capacity: 10, refill_perod: 60}}
entities:
  "bad#id":
    resources: {gpt: {limits: {rpm: 10/fortnight}}}
`,
  );
  const r = await env.run("limits", "apply", "-f", file);
  assert.equal(r.code, 2);
  assert.match(
    r.err,
    /bad\.yaml:4:21: system\.limits\.rpm\.capacity: expected a positive whole number, got -5/,
  );
  assert.match(
    r.err,
    /bad\.yaml:5:1: resouces: unknown key "resouces" \(did you mean "resources"\?\)/,
  );
  assert.match(
    r.err,
    /bad\.yaml:9:3: entities\."bad#id": invalid entity id "bad#id"/,
  );
  assert.match(
    r.err,
    /Cannot use limits manifest ".*bad\.yaml": 3 problem\(s\) listed above/,
  );
  assert.ok(
    r.err.includes(
      "    4 |     rpm: {capacity: -5}\n      |                     ^",
    ),
    r.err,
  );
  assert.deepEqual((await (await env.repo()).getSystemDefaults()).limits, []);

  const syntax = await env.write(
    "syntax.yaml",
    "system:\n  limits: {rpm: {capacity: 5}\nresources: {}\n",
  );
  const s = await env.run("--output", "json", "limits", "plan", "-f", syntax);
  assert.equal(s.code, 2);
  const issues = JSON.parse(s.out).issues;
  assert.equal(issues[0].code, "YAML_SYNTAX");
  assert.equal(issues[0].line, 3);

  const missing = await env.run("limits", "diff", "-f", `${env.dir}/nope.yaml`);
  assert.equal(missing.code, 1);
  assert.match(
    missing.err,
    /Cannot read limits manifest ".*nope\.yaml": no such file/,
  );

  const other = await env.write("other.yaml", "namespace: tenant-a\n");
  const conflict = await env.run(
    "-N",
    "default",
    "limits",
    "plan",
    "-f",
    other,
  );
  assert.equal(conflict.code, 2);
  assert.match(
    conflict.err,
    /other\.yaml:1: the manifest is for namespace "tenant-a" but -N is "default"/,
  );
  const unregistered = await env.run("limits", "plan", "-f", other);
  assert.equal(unregistered.code, 1);
  assert.match(unregistered.err, /Namespace 'tenant-a' not found/);
});

Deno.test("applyLimitsPlan writes nothing of a unit changed after the plan read it, and applies the others", async () => {
  await using env = await localTable();
  const repo = await env.repo();
  await repo.setLimits("key-1", [Limit.perMinute("rpm", 10)], {
    resource: "gpt",
  });
  const m = parseLimitsManifest(
    `resources:
  gpt: {limits: {rpm: 100/min}}
entities:
  key-1:
    resources:
      gpt: {limits: {rpm: 20/min}}
      _default_: {limits: {rpm: 30/min}}
`,
    "m.yaml",
  );
  const desired = {
    namespace: "default",
    system: m.system,
    resources: m.resources,
    entities: m.entities,
  };
  const plan = planLimits(
    desired,
    await readLiveLimits(repo, { also: desired }),
  );
  assert.deepEqual(plan.changes.map((c) => c.action), [
    "create",
    "create",
    "update",
  ]);
  // Someone else changes key-1/gpt between the read and the write.
  await repo.setLimits("key-1", [Limit.perMinute("rpm", 11)], {
    resource: "gpt",
  });
  const results = await applyLimitsPlan(repo, plan, { principal: "test" });
  assert.deepEqual(
    results.map((r) => [r.unit.label, r.ok, r.ok ? null : r.kind]),
    [["resource gpt", true, null], ["entity key-1", false, "stale"]],
  );
  // Atomic per entity: the _default_ create of the same unit was not written either.
  assert.deepEqual(await repo.getLimits("key-1"), []);
  assert.equal(
    (await repo.getLimits("key-1", { resource: "gpt" }))[0]?.capacity,
    11,
  );
  assert.equal((await repo.getResourceDefaults("gpt"))[0]?.capacity, 100);
  assert.deepEqual(await repo.listResourcesWithEntityConfigs(), ["gpt"]);

  // The system item keeps what apply does not own (audit_retention_days), through an update and a delete.
  await repo.setSystemDefaults([Limit.perMinute("rpm", 5)], {
    auditRetentionDays: 30,
  });
  const withSystem = parseLimitsManifest("system: {limits: {rpm: 6}}\n", "s");
  const sysPlan = planLimits(
    { ...desired, system: withSystem.system },
    await readLiveLimits(repo),
  );
  const sysResults = await applyLimitsPlan(repo, sysPlan, { principal: "t" });
  assert.ok(sysResults.every((r) => r.ok));
  assert.deepEqual(
    [
      (await repo.getSystemDefaults()).limits[0]?.capacity,
      (await repo.getSystemDefaults()).auditRetentionDays,
    ],
    [6, 30],
  );
  const dropPlan = planLimits(
    { ...desired, system: null },
    await readLiveLimits(repo),
  );
  assert.deepEqual(
    dropPlan.changes.filter((c) => c.target.level === "system").map((
      c,
    ) => [c.action, c.reason]),
    [["delete", "removed"]],
  );
  await applyLimitsPlan(repo, dropPlan, { principal: "t" });
  const after = await repo.getSystemDefaults();
  assert.deepEqual([after.limits, after.auditRetentionDays], [[], 30]);
});

Deno.test("getResourceCapacity sums every page of buckets, matching the raw items", async () => {
  await using env = await localTable();
  const repo = await env.repo();
  // One token per day of refill: nothing refills (in whole tokens) while the test runs.
  const slow = (name: string, capacity: number) =>
    new Limit(name, capacity, 1, 86_400);
  await repo.setResourceDefaults("gpt", [
    slow("rpm", 100),
    slow("tpm", 10_000),
  ]);
  await repo.createEntity("org");
  const ids = ["a", "b", "c", "d", "e", "f", "org"];
  for (const id of ids.slice(0, 3)) {
    await repo.createEntity(id, { parentId: "org", cascade: false });
  }
  await repo.setLimits("e", [slow("rpm", 40)], { resource: "gpt" });
  const limiter = new RateLimiter(repo);
  for (const [i, id] of ids.entries()) {
    for (let k = 0; k <= i; k++) {
      await limiter.acquire({
        entityId: id,
        resource: "gpt",
        consume: { rpm: 3 },
      }, () => {});
    }
  }
  await limiter.acquire({
    entityId: "b",
    resource: "gpt",
    consume: { rpm: 1, tpm: 2500 },
  }, () => {});
  await limiter.acquire({
    entityId: "other",
    resource: "not-gpt",
    consume: { rpm: 1 },
  }, (l) => l)
    .catch(() => {});

  // Expected from the raw items, one GetItem each.
  const { client } = await localClient();
  const expected = new Map<
    string,
    { entities: number; capacity: number; available: number }
  >();
  try {
    for (const id of ids) {
      const out = await client.send(
        new GetItemCommand({
          TableName: env.table,
          Key: {
            PK: { S: pkBucket(repo.namespaceId, id, "gpt", 0) },
            SK: { S: SK.STATE },
          },
          ConsistentRead: true,
        }),
      );
      const item = out.Item ?? {};
      for (const name of ["rpm", "tpm"]) {
        const tk = item[`b_${name}_tk`]?.N;
        const cp = item[`b_${name}_cp`]?.N;
        if (tk === undefined || cp === undefined) continue;
        const e = expected.get(name) ??
          { entities: 0, capacity: 0, available: 0 };
        e.entities++;
        e.capacity += Number(cp) / 1000;
        e.available += Math.floor(Number(tk) / 1000);
        expected.set(name, e);
      }
    }
  } finally {
    client.destroy();
  }
  const pages: number[] = [];
  const r = await repo.getResourceCapacity("gpt", {
    pageSize: 2,
    onPage: (p) => pages.push(p.bucketItems),
  });
  assert.ok(pages.length >= 4, `read in pages of 2: ${pages}`);
  assert.equal(r.entities, ids.length);
  assert.equal(r.bucketItems, ids.length);
  assert.deepEqual(
    r.limits.map((
      l,
    ) => [l.limitName, l.entities, l.totalCapacity, l.totalAvailable]),
    [...expected].sort().map((
      [n, e],
    ) => [n, e.entities, e.capacity, e.available]),
  );
  // The figures themselves: rpm 6 × 100 + 40 capacity; 3 × (1+…+7) + 1 consumed.
  assert.deepEqual(r.limits[0], {
    limitName: "rpm",
    entities: 7,
    totalCapacity: 640,
    totalAvailable: 640 - 3 * 28 - 1,
    utilizationPct: Math.round(85 / 640 * 10_000) / 100,
  });
  // Without a parent: d, e, f, org; e's own limits have no tpm.
  const parents = await repo.getResourceCapacity("gpt", {
    parentsOnly: true,
    limitName: "tpm",
  });
  assert.deepEqual([parents.entities, parents.limits.map((l) => l.limitName)], [
    3,
    ["tpm"],
  ]);

  const cli = await env.run(
    "--output",
    "json",
    "resource",
    "capacity",
    "gpt",
    "--top",
    "2",
  );
  assert.equal(cli.code, 0, cli.err);
  const json = JSON.parse(cli.out);
  // e: 15 of 40 rpm used (37.5 %); b: 2,500 of 10,000 tpm (25 %); org: 21 of 100 rpm.
  assert.deepEqual(json.limits, r.limits);
  assert.deepEqual(json.top.map((t: { entityId: string }) => t.entityId), [
    "e",
    "b",
  ]);
  const text = await env.run(
    "resource",
    "capacity",
    "gpt",
    "--limit-name",
    "rpm",
  );
  assert.ok(
    text.out.includes(
      "| rpm   |        7 |            640 |       555 |      13.28% |",
    ),
    text.out,
  );
  const none = await env.run("resource", "capacity", "nothing-here");
  assert.match(none.out, /No buckets for resource 'nothing-here'/);
});
