import assert from "node:assert/strict";
import {
  checkCompatibility,
  compareVersions,
  parseVersion,
  safeParseVersion,
  type VersionRecord,
} from "./version.ts";

const CLIENT = { clientVersion: "0.10.0", schemaVersion: "0.10.0" } as const;

function record(fields: Partial<VersionRecord> = {}): VersionRecord {
  return {
    schemaVersion: "0.10.0",
    clientMinVersion: "0.0.0",
    lambdaVersion: "0.10.0",
    updatedAt: null,
    updatedBy: null,
    ...fields,
  };
}

Deno.test("safeParseVersion() maps the PEP 440 versions the Python client writes to semver", () => {
  const cases: [string, string][] = [
    ["0.10.0", "0.10.0"],
    ["v0.10.0", "0.10.0"],
    ["0.11.0-rc.1", "0.11.0-rc.1"],
    ["0.10.2.dev42+gced59de", "0.10.2-0.dev.42+gced59de"],
    ["0.10.2.dev42+gced59de.d20260101", "0.10.2-0.dev.42+gced59de.d20260101"],
    ["0.11.0rc1", "0.11.0-rc.1"],
    ["0.11.0RC1", "0.11.0-rc.1"],
    ["0.11.0c1", "0.11.0-rc.1"],
    ["0.11.0b2", "0.11.0-b.2"],
    ["0.11.0alpha3", "0.11.0-a.3"],
    ["0.11.0rc", "0.11.0-rc.0"],
    ["0.11.0rc2.dev3", "0.11.0-rc.2.dev.3"],
    ["0.10.1.post1", "0.10.1+post.1"],
    ["0.10.1.post2.dev1", "0.10.1+post.2.dev.1"],
    ["0.10.1.post1+local_7", "0.10.1+post.1.local.7"],
    ["0.10.1.dev", "0.10.1-0.dev.0"],
  ];
  for (const [input, expected] of cases) {
    assert.deepEqual(
      safeParseVersion(input),
      { ok: true, value: expected },
      input,
    );
  }
});

Deno.test("safeParseVersion() refuses what is neither semver nor a three-part PEP 440 version", () => {
  for (
    const input of [
      "",
      "1.2",
      "01.2.3",
      "1.02.3",
      "1!1.2.3",
      "1.2.3.4",
      "1.2.3foo",
      "0.10.0 garbage",
      "latest",
    ]
  ) {
    const r = safeParseVersion(input);
    assert.equal(r.ok, false, input);
    if (!r.ok) {
      assert.ok(r.error instanceof SyntaxError);
      assert.equal(r.error.name, "VersionSyntaxError");
      assert.equal(r.error.input, input);
    }
  }
  assert.throws(() => parseVersion("1.2"), {
    name: "VersionSyntaxError",
    input: "1.2",
  });
});

Deno.test("compareVersions() orders releases, pre-releases and dev builds as PEP 440 does", () => {
  const ordered = [
    "0.9.9",
    "0.10.0.dev1",
    "0.10.0.dev2",
    "0.10.0a1",
    "0.10.0b1",
    "0.10.0rc1",
    "0.10.0rc2",
    "0.10.0",
    "0.10.1.dev42+gced59de",
    "0.10.1",
    "0.11.0rc1",
    "0.11.0",
    "1.0.0",
  ];
  for (let i = 0; i + 1 < ordered.length; i++) {
    const [a, b] = [ordered[i] ?? "", ordered[i + 1] ?? ""];
    assert.ok(compareVersions(a, b) < 0, `${a} < ${b}`);
    assert.ok(compareVersions(b, a) > 0, `${b} > ${a}`);
  }
  // Precedence ignores build metadata and post-releases, as semver does.
  assert.equal(compareVersions("0.10.1.post1", "0.10.1"), 0);
  assert.equal(compareVersions("0.10.1+abc", "0.10.1"), 0);
  // The hand-written helper this replaced said these were equal.
  assert.ok(compareVersions("0.10.0-rc.1", "0.10.0") < 0);
  assert.ok(compareVersions("0.11.0rc1", "0.11.0-rc.1") === 0);
  assert.throws(() => compareVersions("1.2", "1.2.0"), {
    name: "VersionSyntaxError",
  });
});

Deno.test("checkCompatibility() says COMPATIBLE for a table a Python dev build initialised", () => {
  const dev = "0.10.2.dev42+gced59de";
  for (
    const r of [
      record({ lambdaVersion: dev, updatedBy: `client:${dev}` }),
      record({ schemaVersion: "0.10.0", lambdaVersion: dev }),
    ]
  ) {
    assert.deepEqual(checkCompatibility(CLIENT, r), {
      compatible: true,
      updateAvailable: false,
      issues: [],
    });
  }
  // The Python client's release candidate and post-release on the same line.
  assert.equal(
    checkCompatibility(CLIENT, record({ lambdaVersion: "0.11.0rc1" }))
      .compatible,
    true,
  );
  const post = checkCompatibility(
    { clientVersion: "0.10.1", schemaVersion: "0.10.0" },
    record({ lambdaVersion: "0.10.1.post1" }),
  );
  assert.deepEqual(post.issues, []);
});

Deno.test("checkCompatibility() reports workers older than the client, pre-releases included", () => {
  const r = checkCompatibility(
    CLIENT,
    record({ lambdaVersion: "0.10.0rc1" }),
  );
  assert.equal(r.compatible, true);
  assert.equal(r.updateAvailable, true);
  assert.deepEqual(r.issues.map((i) => i.kind), ["workers_outdated"]);
  // Live heartbeats win over the record; the oldest counts.
  const live = checkCompatibility(CLIENT, record({ lambdaVersion: "0.9.0" }), [
    "0.10.0",
    "0.10.0.dev3",
  ]);
  assert.deepEqual(live.issues, [{
    kind: "workers_outdated",
    clientVersion: "0.10.0",
    workerVersion: "0.10.0.dev3",
    action: "run 'zae-limiter upgrade --workers-only'",
  }]);
});

Deno.test("checkCompatibility() blocks on another schema line and on a client below the minimum", () => {
  const schema = checkCompatibility(CLIENT, record({ schemaVersion: "0.9.0" }));
  assert.equal(schema.compatible, false);
  assert.equal(schema.issues[0]?.kind, "schema_incompatible");
  const min = checkCompatibility(
    CLIENT,
    record({ clientMinVersion: "0.11.0rc1" }),
  );
  assert.equal(min.compatible, false);
  assert.equal(min.issues[0]?.kind, "client_too_old");
  // A release satisfies a minimum that is its own pre-release.
  assert.equal(
    checkCompatibility(CLIENT, record({ clientMinVersion: "0.10.0rc1" }))
      .compatible,
    true,
  );
});

Deno.test("checkCompatibility() never throws on unreadable stored versions", () => {
  const schema = checkCompatibility(
    CLIENT,
    record({ schemaVersion: "ten" }),
  );
  assert.equal(schema.compatible, false);
  assert.equal(schema.issues[0]?.kind, "schema_incompatible");

  // An unreadable minimum is read as 0.0.0 (spec 06 §4.2), and said so.
  const min = checkCompatibility(CLIENT, record({ clientMinVersion: "1.2" }));
  assert.equal(min.compatible, true);
  assert.deepEqual(min.issues.map((i) => [i.kind, "field" in i && i.field]), [
    ["version_unreadable", "clientMinVersion"],
  ]);

  // An unreadable worker version counts as outdated (spec 06 §4.2).
  const worker = checkCompatibility(CLIENT, record({ lambdaVersion: "abc" }));
  assert.equal(worker.compatible, true);
  assert.equal(worker.updateAvailable, true);
  assert.deepEqual(worker.issues.map((i) => i.kind), ["version_unreadable"]);

  const client = checkCompatibility(
    { clientVersion: "dev", schemaVersion: "0.10.0" },
    record(),
  );
  assert.equal(client.compatible, false);
  assert.equal(client.issues[0]?.kind, "version_unreadable");
});

Deno.test("checkCompatibility() reports unknown workers when none is recorded or running", () => {
  const r = checkCompatibility(CLIENT, record({ lambdaVersion: null }));
  assert.equal(r.compatible, true);
  assert.equal(r.updateAvailable, false);
  assert.deepEqual(r.issues.map((i) => i.kind), ["workers_unknown"]);
});

Deno.test("mod.ts exports no version helpers, only checkCompatibility", async () => {
  const api = await import("../mod.ts");
  for (
    const name of [
      "parseSemver",
      "compareSemver",
      "parseVersion",
      "compareVersions",
      "safeParseVersion",
    ]
  ) {
    assert.equal(name in api, false, name);
  }
  assert.equal(typeof api.checkCompatibility, "function");
});
