import assert from "node:assert/strict";
import {
  bucketAttr,
  DEFAULT_NAMESPACE,
  DEFAULT_RESOURCE,
  gsi1PkParent,
  gsi1SkChild,
  gsi2PkResource,
  gsi2SkBucket,
  gsi2SkUsage,
  gsi3PkEntity,
  gsi3PkEntityConfig,
  gsi3SkBucket,
  gsi4SkBucket,
  isUnprefixedKey,
  KeyParseError,
  limitAttr,
  parseBucketAttr,
  parseBucketPk,
  parseLimitAttr,
  parseNamespace,
  pkAudit,
  pkBucket,
  pkEntity,
  pkResource,
  pkSystem,
  PREFIX,
  prefixKey,
  RESERVED_NAMESPACE,
  safeParseBucketPk,
  safeParseNamespace,
  SK,
  skAudit,
  skConfig,
  skNamespace,
  skNsid,
  skUsage,
} from "./keys.ts";

const NS = "a7x3kq_9Qw1";

// ---------------------------------------------------------------------------
// Constants

Deno.test("RESERVED_NAMESPACE, DEFAULT_NAMESPACE and DEFAULT_RESOURCE match the spec", () => {
  assert.equal(RESERVED_NAMESPACE, "_");
  assert.equal(DEFAULT_NAMESPACE, "default");
  assert.equal(DEFAULT_RESOURCE, "_default_");
});

Deno.test("SK holds the fixed sort keys of spec 01 §3", () => {
  assert.deepEqual(SK, {
    META: "#META",
    STATE: "#STATE",
    CONFIG: "#CONFIG",
    VERSION: "#VERSION",
    RESOURCES: "#RESOURCES",
    ENTITY_CONFIG_RESOURCES: "#ENTITY_CONFIG_RESOURCES",
    AUDIT: "#AUDIT#",
    USAGE: "#USAGE#",
    NAMESPACE: "#NAMESPACE#",
    NSID: "#NSID#",
    PROVISIONER: "#PROVISIONER",
  });
});

Deno.test("PREFIX holds the partition-key remainder prefixes", () => {
  assert.deepEqual(PREFIX, {
    ENTITY: "ENTITY#",
    SYSTEM: "SYSTEM#",
    RESOURCE: "RESOURCE#",
    AUDIT: "AUDIT#",
    BUCKET: "BUCKET#",
    PARENT: "PARENT#",
    CHILD: "CHILD#",
    ENTITY_CONFIG: "ENTITY_CONFIG#",
  });
});

// ---------------------------------------------------------------------------
// Partition-key builders

Deno.test("pkEntity() builds {ns}/ENTITY#{id}", () => {
  assert.equal(pkEntity(NS, "user-123"), "a7x3kq_9Qw1/ENTITY#user-123");
});

Deno.test("pkSystem() builds {ns}/SYSTEM#", () => {
  assert.equal(pkSystem(NS), "a7x3kq_9Qw1/SYSTEM#");
  assert.equal(pkSystem(RESERVED_NAMESPACE), "_/SYSTEM#");
});

Deno.test("pkResource() builds {ns}/RESOURCE#{r}", () => {
  assert.equal(pkResource(NS, "gpt-4"), "a7x3kq_9Qw1/RESOURCE#gpt-4");
  assert.equal(
    pkResource(NS, "openai/gpt-4"),
    "a7x3kq_9Qw1/RESOURCE#openai/gpt-4",
  );
});

Deno.test("pkAudit() builds {ns}/AUDIT#{id}", () => {
  assert.equal(pkAudit(NS, "user-1"), "a7x3kq_9Qw1/AUDIT#user-1");
  assert.equal(pkAudit(NS, "$SYSTEM"), "a7x3kq_9Qw1/AUDIT#$SYSTEM");
});

Deno.test("pkBucket() builds {ns}/BUCKET#{id}#{r}#{shard}", () => {
  assert.equal(
    pkBucket("ns1", "user-1", "gpt-4", 0),
    "ns1/BUCKET#user-1#gpt-4#0",
  );
  assert.equal(
    pkBucket(NS, "user-1", "openai/gpt-4", 12),
    "a7x3kq_9Qw1/BUCKET#user-1#openai/gpt-4#12",
  );
});

// ---------------------------------------------------------------------------
// Sort-key builders

Deno.test("skConfig() builds #CONFIG without a resource and #CONFIG#{r} with one", () => {
  assert.equal(skConfig(), "#CONFIG");
  assert.equal(skConfig("gpt-4"), "#CONFIG#gpt-4");
  assert.equal(skConfig(DEFAULT_RESOURCE), "#CONFIG#_default_");
  assert.equal(skConfig("openai/gpt-4"), "#CONFIG#openai/gpt-4");
});

Deno.test("skConfig() keeps an empty resource distinct from no resource", () => {
  assert.equal(skConfig(""), "#CONFIG#");
});

Deno.test("skAudit() builds #AUDIT#{eventId}", () => {
  assert.equal(
    skAudit("01ARYZ6S41TSV4RRFFQ69G5FAV"),
    "#AUDIT#01ARYZ6S41TSV4RRFFQ69G5FAV",
  );
});

Deno.test("skUsage() builds #USAGE#{r}#{windowKey}", () => {
  assert.equal(
    skUsage("gpt-4", "2024-01-15T14:00:00Z"),
    "#USAGE#gpt-4#2024-01-15T14:00:00Z",
  );
});

Deno.test("skNamespace() builds #NAMESPACE#{name}", () => {
  assert.equal(skNamespace("tenant-alpha"), "#NAMESPACE#tenant-alpha");
});

Deno.test("skNsid() builds #NSID#{id}", () => {
  assert.equal(skNsid(NS), "#NSID#a7x3kq_9Qw1");
});

// ---------------------------------------------------------------------------
// GSI builders

Deno.test("gsi1PkParent() and gsi1SkChild() build the parent → child index keys", () => {
  assert.equal(gsi1PkParent(NS, "org-1"), "a7x3kq_9Qw1/PARENT#org-1");
  assert.equal(gsi1SkChild("user-1"), "CHILD#user-1");
});

Deno.test("gsi2PkResource() builds {ns}/RESOURCE#{r}", () => {
  assert.equal(gsi2PkResource(NS, "gpt-4"), "a7x3kq_9Qw1/RESOURCE#gpt-4");
});

Deno.test("gsi2SkBucket() builds BUCKET#{id}#{shard}", () => {
  assert.equal(gsi2SkBucket("user-1", 3), "BUCKET#user-1#3");
});

Deno.test("gsi2SkBucket() defaults to shard 0", () => {
  assert.equal(gsi2SkBucket("id"), "BUCKET#id#0");
});

Deno.test("gsi2SkUsage() builds USAGE#{windowKey}#{id}", () => {
  assert.equal(
    gsi2SkUsage("2024-01-15T00:00:00Z", "user-1"),
    "USAGE#2024-01-15T00:00:00Z#user-1",
  );
});

Deno.test("gsi3PkEntityConfig() builds {ns}/ENTITY_CONFIG#{r}", () => {
  assert.equal(
    gsi3PkEntityConfig(NS, "gpt-4"),
    "a7x3kq_9Qw1/ENTITY_CONFIG#gpt-4",
  );
  assert.equal(
    gsi3PkEntityConfig(NS, DEFAULT_RESOURCE),
    "a7x3kq_9Qw1/ENTITY_CONFIG#_default_",
  );
});

Deno.test("gsi3PkEntity() and gsi3SkBucket() build the bucket-discovery index keys", () => {
  assert.equal(gsi3PkEntity(NS, "user-1"), "a7x3kq_9Qw1/ENTITY#user-1");
  assert.equal(gsi3SkBucket("openai/gpt-4", 0), "BUCKET#openai/gpt-4#0");
  assert.equal(gsi3SkBucket("gpt-4", 17), "BUCKET#gpt-4#17");
});

Deno.test("gsi4SkBucket() builds BUCKET#{id}#{r}#{shard} without a namespace prefix", () => {
  assert.equal(gsi4SkBucket("user-1", "gpt-4", 2), "BUCKET#user-1#gpt-4#2");
  // It is the bucket PK without "{ns}/".
  assert.equal(`${NS}/${gsi4SkBucket("u", "r", 5)}`, pkBucket(NS, "u", "r", 5));
});

Deno.test("prefixKey() prepends {ns}/ to an unprefixed key", () => {
  assert.equal(prefixKey(NS, "ENTITY#user-1"), "a7x3kq_9Qw1/ENTITY#user-1");
  assert.equal(prefixKey("_", "SYSTEM#"), "_/SYSTEM#");
  assert.equal(
    prefixKey(NS, "RESOURCE#openai/gpt-4"),
    "a7x3kq_9Qw1/RESOURCE#openai/gpt-4",
  );
});

// ---------------------------------------------------------------------------
// Attribute names

Deno.test("bucketAttr() builds b_{limit}_{field}", () => {
  assert.equal(bucketAttr("rpm", "tk"), "b_rpm_tk");
  assert.equal(bucketAttr("tokens_per_minute", "cp"), "b_tokens_per_minute_cp");
  assert.equal(bucketAttr("gpt-3.5", "tc"), "b_gpt-3.5_tc");
});

Deno.test("limitAttr() builds l_{limit}_{field}", () => {
  assert.equal(limitAttr("rpm", "cp"), "l_rpm_cp");
  assert.equal(limitAttr("tokens_per_minute", "rp"), "l_tokens_per_minute_rp");
});

Deno.test("parseBucketAttr() splits at the last underscore so limit names may contain underscores", () => {
  assert.deepEqual(parseBucketAttr("b_rpm_tk"), {
    limitName: "rpm",
    field: "tk",
  });
  assert.deepEqual(parseBucketAttr("b_tokens_per_minute_tk"), {
    limitName: "tokens_per_minute",
    field: "tk",
  });
  assert.deepEqual(parseBucketAttr("b_a__b_rp"), {
    limitName: "a__b",
    field: "rp",
  });
  assert.deepEqual(parseBucketAttr("b_wcu_tc"), {
    limitName: "wcu",
    field: "tc",
  });
});

Deno.test("parseBucketAttr() inverts bucketAttr() for every field", () => {
  for (const field of ["tk", "cp", "ra", "rp", "tc"] as const) {
    for (const name of ["rpm", "tokens_per_minute", "gpt-3.5", "x_y_z"]) {
      assert.deepEqual(parseBucketAttr(bucketAttr(name, field)), {
        limitName: name,
        field,
      });
    }
  }
});

Deno.test("parseBucketAttr() returns null without the b_ prefix", () => {
  assert.equal(parseBucketAttr("l_rpm_cp"), null);
  assert.equal(parseBucketAttr("rpm_tk"), null);
  assert.equal(parseBucketAttr("B_rpm_tk"), null);
  assert.equal(parseBucketAttr("shard_count"), null);
  assert.equal(parseBucketAttr(""), null);
});

Deno.test("parseBucketAttr() returns null when the last underscore is absent or at position 0", () => {
  assert.equal(parseBucketAttr("b_tk"), null);
  assert.equal(parseBucketAttr("b__tk"), null);
  assert.equal(parseBucketAttr("b_"), null);
});

Deno.test("parseBucketAttr() returns an empty field for a trailing underscore", () => {
  // The spec only rules out a missing or leading last "_".
  assert.deepEqual(parseBucketAttr("b_rpm_"), { limitName: "rpm", field: "" });
});

Deno.test("parseLimitAttr() splits at the last underscore so limit names may contain underscores", () => {
  assert.deepEqual(parseLimitAttr("l_rpm_cp"), {
    limitName: "rpm",
    field: "cp",
  });
  assert.deepEqual(parseLimitAttr("l_tokens_per_minute_ra"), {
    limitName: "tokens_per_minute",
    field: "ra",
  });
  for (const field of ["cp", "ra", "rp"] as const) {
    assert.deepEqual(parseLimitAttr(limitAttr("a_b_c", field)), {
      limitName: "a_b_c",
      field,
    });
  }
});

Deno.test("parseLimitAttr() returns null without the l_ prefix or a usable underscore", () => {
  assert.equal(parseLimitAttr("b_rpm_cp"), null);
  assert.equal(parseLimitAttr("config_version"), null);
  assert.equal(parseLimitAttr("l_cp"), null);
  assert.equal(parseLimitAttr("l__cp"), null);
});

// ---------------------------------------------------------------------------
// isUnprefixedKey / safeParseNamespace

Deno.test("isUnprefixedKey() is true for keys without a slash", () => {
  assert.equal(isUnprefixedKey("ENTITY#u1"), true);
  assert.equal(isUnprefixedKey("SYSTEM#"), true);
  assert.equal(isUnprefixedKey(""), true);
});

Deno.test("isUnprefixedKey() is true when the first # comes before the first /", () => {
  assert.equal(isUnprefixedKey("RESOURCE#openai/gpt-4"), true);
  assert.equal(isUnprefixedKey("ENTITY_CONFIG#anthropic/claude-3/opus"), true);
});

Deno.test("isUnprefixedKey() is false for namespaced keys", () => {
  assert.equal(isUnprefixedKey("ns/ENTITY#u1"), false);
  assert.equal(isUnprefixedKey("ns/RESOURCE#openai/gpt-4"), false);
  assert.equal(isUnprefixedKey("_/SYSTEM#"), false);
  assert.equal(isUnprefixedKey("ns/plain"), false);
});

Deno.test("safeParseNamespace() splits at the first slash", () => {
  assert.deepEqual(safeParseNamespace("a7x3kq/ENTITY#user-123"), {
    ok: true,
    value: { namespaceId: "a7x3kq", rest: "ENTITY#user-123" },
  });
  assert.deepEqual(safeParseNamespace("ns/a/b"), {
    ok: true,
    value: { namespaceId: "ns", rest: "a/b" },
  });
  assert.deepEqual(safeParseNamespace("_/SYSTEM#"), {
    ok: true,
    value: { namespaceId: "_", rest: "SYSTEM#" },
  });
  assert.deepEqual(safeParseNamespace("ns/"), {
    ok: true,
    value: { namespaceId: "ns", rest: "" },
  });
});

Deno.test("safeParseNamespace() accepts every character a generated namespace id can hold", () => {
  // URL-safe base64 without padding: [A-Za-z0-9_-]
  assert.deepEqual(safeParseNamespace("Az09_-xY_-1/ENTITY#u"), {
    ok: true,
    value: { namespaceId: "Az09_-xY_-1", rest: "ENTITY#u" },
  });
});

Deno.test("safeParseNamespace() classifies legacy keys as unprefixed", () => {
  assert.deepEqual(safeParseNamespace("ENTITY#u1"), {
    ok: false,
    issue: "unprefixed",
    key: "ENTITY#u1",
  });
  assert.deepEqual(safeParseNamespace("RESOURCE#openai/gpt-4"), {
    ok: false,
    issue: "unprefixed",
    key: "RESOURCE#openai/gpt-4",
  });
  assert.deepEqual(safeParseNamespace("SYSTEM#"), {
    ok: false,
    issue: "unprefixed",
    key: "SYSTEM#",
  });
});

Deno.test("safeParseNamespace() reports an empty key as empty", () => {
  assert.deepEqual(safeParseNamespace(""), {
    ok: false,
    issue: "empty",
    key: "",
  });
});

Deno.test("safeParseNamespace() reports a prefix that cannot be a namespace id", () => {
  // Stricter than the reference, which would return ("", "x").
  assert.deepEqual(safeParseNamespace("/x"), {
    ok: false,
    issue: "bad_namespace",
    key: "/x",
  });
  assert.deepEqual(safeParseNamespace("a.b/ENTITY#u"), {
    ok: false,
    issue: "bad_namespace",
    key: "a.b/ENTITY#u",
  });
  assert.deepEqual(safeParseNamespace("a b/ENTITY#u"), {
    ok: false,
    issue: "bad_namespace",
    key: "a b/ENTITY#u",
  });
});

Deno.test("safeParseNamespace() never throws on arbitrary strings", () => {
  const samples = [
    "",
    "/",
    "//",
    "#",
    "#/",
    "/#",
    "a#b/c",
    "ns//x",
    "\u0000/\u0000",
    "ü/ENTITY#x",
    "ns/#",
  ];
  for (const key of samples) {
    const r = safeParseNamespace(key);
    assert.equal(typeof r.ok, "boolean", key);
  }
});

// ---------------------------------------------------------------------------
// parseNamespace (strict)

Deno.test("parseNamespace() returns namespace id and remainder for a namespaced key", () => {
  assert.deepEqual(parseNamespace("a7x3kq/ENTITY#user-123"), {
    namespaceId: "a7x3kq",
    rest: "ENTITY#user-123",
  });
  assert.deepEqual(parseNamespace("ns/a/b"), {
    namespaceId: "ns",
    rest: "a/b",
  });
});

Deno.test("parseNamespace() throws KeyParseError when the key has no slash", () => {
  assert.throws(() => parseNamespace("ENTITY#user-123"), {
    name: "KeyParseError",
    issue: "unprefixed",
    key: "ENTITY#user-123",
  });
  assert.throws(() => parseNamespace("plain"), {
    name: "KeyParseError",
    issue: "unprefixed",
  });
});

Deno.test("parseNamespace() throws KeyParseError for the empty string", () => {
  assert.throws(() => parseNamespace(""), {
    name: "KeyParseError",
    issue: "empty",
    key: "",
  });
});

Deno.test("parseNamespace() throws KeyParseError for a legacy key whose value contains a slash", () => {
  assert.throws(() => parseNamespace("RESOURCE#openai/gpt-4"), {
    name: "KeyParseError",
    issue: "unprefixed",
  });
});

Deno.test("parseNamespace() throws KeyParseError for an empty namespace id", () => {
  assert.throws(() => parseNamespace("/x"), {
    name: "KeyParseError",
    issue: "bad_namespace",
  });
});

Deno.test("KeyParseError is a SyntaxError carrying the key and issue", () => {
  const e = new KeyParseError("ns1/ENTITY#u", "not_a_bucket");
  assert.ok(e instanceof SyntaxError);
  assert.ok(e instanceof Error);
  assert.equal(e.name, "KeyParseError");
  assert.equal(e.key, "ns1/ENTITY#u");
  assert.equal(e.issue, "not_a_bucket");
  assert.match(e.message, /"ns1\/ENTITY#u"/);
});

Deno.test("KeyParseError message spells the whole issue in words", () => {
  for (
    const issue of [
      "empty",
      "unprefixed",
      "bad_namespace",
      "not_a_bucket",
      "bad_shard",
    ] as const
  ) {
    const message = new KeyParseError("k", issue).message;
    assert.ok(
      message.endsWith(issue.replaceAll("_", " ")),
      `${issue}: ${message}`,
    );
  }
});

// ---------------------------------------------------------------------------
// Bucket PK parsing

Deno.test("parseBucketPk() parses the spec example", () => {
  assert.deepEqual(parseBucketPk("ns1/BUCKET#user-1#gpt-4#0"), {
    namespaceId: "ns1",
    entityId: "user-1",
    resource: "gpt-4",
    shard: 0,
  });
});

Deno.test("parseBucketPk() parses multi-digit shards", () => {
  assert.equal(parseBucketPk("ns1/BUCKET#user-1#gpt-4#12").shard, 12);
  assert.equal(parseBucketPk("ns1/BUCKET#user-1#gpt-4#1024").shard, 1024);
});

Deno.test("parseBucketPk() keeps slashes in the resource", () => {
  assert.deepEqual(parseBucketPk("ns1/BUCKET#user-1#openai/gpt-4#3"), {
    namespaceId: "ns1",
    entityId: "user-1",
    resource: "openai/gpt-4",
    shard: 3,
  });
});

Deno.test("parseBucketPk() inverts pkBucket() for resources with slashes and many shards", () => {
  const entities = [
    "user-1",
    "a",
    "550e8400-e29b-41d4-a716-446655440000",
    "user@example.com",
    "sk-proj-abc:1",
  ];
  const resources = [
    "gpt-4",
    "openai/gpt-4",
    "anthropic/claude-3/opus",
    "openai/",
    "a/b/c/d",
    "gpt-3.5_turbo",
  ];
  const shards = [0, 1, 7, 10, 31, 32, 100, 4096];
  for (const entityId of entities) {
    for (const resource of resources) {
      for (const shard of shards) {
        const pk = pkBucket(NS, entityId, resource, shard);
        assert.deepEqual(parseBucketPk(pk), {
          namespaceId: NS,
          entityId,
          resource,
          shard,
        }, pk);
      }
    }
  }
});

Deno.test("parseBucketPk() splits entity and resource at the first # and the shard at the last #", () => {
  // Ids and resources cannot contain "#", but a stray one lands in the resource, as in the reference.
  assert.deepEqual(parseBucketPk("ns1/BUCKET#a#b#c#0"), {
    namespaceId: "ns1",
    entityId: "a",
    resource: "b#c",
    shard: 0,
  });
});

Deno.test("parseBucketPk() throws not_a_bucket for a non-bucket remainder", () => {
  assert.throws(() => parseBucketPk("ns1/ENTITY#user-1"), {
    name: "KeyParseError",
    issue: "not_a_bucket",
  });
  assert.throws(() => parseBucketPk("ns1/RESOURCE#gpt-4"), {
    name: "KeyParseError",
    issue: "not_a_bucket",
  });
  assert.throws(() => parseBucketPk("ns1/bucket#u#r#0"), {
    name: "KeyParseError",
    issue: "not_a_bucket",
  });
});

Deno.test("parseBucketPk() throws when the shard part is missing", () => {
  // The last "#" is then the entity/resource separator: "gpt-4" is not a shard.
  assert.throws(() => parseBucketPk("ns1/BUCKET#user-1#gpt-4"), {
    name: "KeyParseError",
    issue: "bad_shard",
  });
  assert.throws(() => parseBucketPk("ns1/BUCKET#user-1#gpt-4#"), {
    name: "KeyParseError",
    issue: "bad_shard",
  });
  assert.throws(() => parseBucketPk("ns1/BUCKET#user-1"), {
    name: "KeyParseError",
    issue: "not_a_bucket",
  });
  assert.throws(() => parseBucketPk("ns1/BUCKET#"), {
    name: "KeyParseError",
    issue: "not_a_bucket",
  });
});

Deno.test("parseBucketPk() throws bad_shard when the shard is not a non-negative integer", () => {
  for (const shard of ["-1", "1.5", "x", "1e3", " 1", "+1", "0x1"]) {
    assert.throws(() => parseBucketPk(`ns1/BUCKET#u#r#${shard}`), {
      name: "KeyParseError",
      issue: "bad_shard",
    }, shard);
  }
});

Deno.test("parseBucketPk() throws not_a_bucket when the entity/resource separator is missing", () => {
  assert.throws(() => parseBucketPk("ns1/BUCKET#user-1#0"), {
    name: "KeyParseError",
    issue: "not_a_bucket",
  });
});

Deno.test("parseBucketPk() throws not_a_bucket for an empty entity id or resource", () => {
  assert.throws(() => parseBucketPk("ns1/BUCKET##gpt-4#0"), {
    name: "KeyParseError",
    issue: "not_a_bucket",
  });
  assert.throws(() => parseBucketPk("ns1/BUCKET#user-1##0"), {
    name: "KeyParseError",
    issue: "not_a_bucket",
  });
});

Deno.test("parseBucketPk() throws for unprefixed and empty keys", () => {
  assert.throws(() => parseBucketPk("BUCKET#user-1#gpt-4#0"), {
    name: "KeyParseError",
    issue: "unprefixed",
  });
  assert.throws(() => parseBucketPk(""), {
    name: "KeyParseError",
    issue: "empty",
  });
});

Deno.test("safeParseBucketPk() returns a result instead of throwing", () => {
  assert.deepEqual(safeParseBucketPk("ns1/BUCKET#user-1#gpt-4#0"), {
    ok: true,
    value: {
      namespaceId: "ns1",
      entityId: "user-1",
      resource: "gpt-4",
      shard: 0,
    },
  });
  assert.deepEqual(safeParseBucketPk("ns1/ENTITY#user-1"), {
    ok: false,
    issue: "not_a_bucket",
    key: "ns1/ENTITY#user-1",
  });
  assert.deepEqual(safeParseBucketPk("ENTITY#u1"), {
    ok: false,
    issue: "unprefixed",
    key: "ENTITY#u1",
  });
  assert.deepEqual(safeParseBucketPk("ns1/BUCKET#u#r#x"), {
    ok: false,
    issue: "bad_shard",
    key: "ns1/BUCKET#u#r#x",
  });
});
