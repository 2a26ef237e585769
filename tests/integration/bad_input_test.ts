/**
 * Bad input against DynamoDB Local: every refusal is a `ValidationError`
 * (never a `TypeError` or a raw SDK `ValidationException`), names the field,
 * shows the value escaped (no raw control character reaches a message, and
 * NaN / Infinity are not shown as `null`), and nothing is written.
 */
import assert from "node:assert/strict";
import {
  type AcquireOptions,
  type CapacityOptions,
  InvalidIdentifierError,
  InvalidNameError,
  Limit,
  RateLimiter,
  Repository,
  ValidationError,
} from "../../mod.ts";
import { freshRepo, localClient, manualClock } from "./_harness.ts";
import { rawGet, scanAll } from "./_stored.ts";

const START = Date.UTC(2030, 0, 15, 12, 0, 0);

/** Raw C0/C1 control characters, line separators and bidi overrides. */
// deno-lint-ignore no-control-regex
const RAW_CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e]/;

async function refusal(
  p: Promise<unknown>,
  expected: {
    code?: string;
    field: string;
    shows?: string;
    cls?: typeof ValidationError;
  },
): Promise<ValidationError> {
  let error: unknown = null;
  try {
    await p;
  } catch (e) {
    error = e;
  }
  assert.ok(error !== null, "expected a rejection");
  assert.ok(
    error instanceof (expected.cls ?? ValidationError),
    `expected ${expected.cls?.name ?? "ValidationError"}, got ${
      error instanceof Error ? `${error.name}: ${error.message}` : error
    }`,
  );
  const e = error as ValidationError;
  assert.equal(e.code, expected.code ?? "VALIDATION_FAILED", e.message);
  assert.equal(e.field, expected.field, e.message);
  if (expected.shows !== undefined) {
    assert.ok(
      e.message.includes(`"${expected.shows}"`),
      `message ${JSON.stringify(e.message)} should show "${expected.shows}"`,
    );
  }
  assert.ok(!RAW_CONTROL.test(e.message), JSON.stringify(e.message));
  return e;
}

// ------------------------------------------------------------ numbers

Deno.test("acquire() names NaN, Infinity and -Infinity in consume (not null) and sends nothing", async () => {
  await using env = await freshRepo({ clock: manualClock(START) });
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  const limiter = new RateLimiter(env.repo);
  for (
    const [amount, shown] of [
      [NaN, "NaN"],
      [Infinity, "Infinity"],
      [-Infinity, "-Infinity"],
    ] as const
  ) {
    env.calls.reset();
    const e = await refusal(
      limiter.acquire({
        entityId: "u1",
        resource: "api",
        consume: { rpm: amount },
      }),
      { field: "consume.rpm", shows: shown },
    );
    assert.ok(!e.message.includes('"null"'), e.message);
    assert.equal(env.calls.total(), 0, "validated before any call");
  }
  const items = await scanAll(env.client, env.repo.tableName);
  assert.equal(
    items.filter((i) => (i["SK"]?.S ?? "").startsWith("#BUCKET")).length,
    0,
    "no bucket was written",
  );
});

// ------------------------------------------------------------ control characters

Deno.test("acquire() escapes control characters of an entity id, a resource and a limit name", async () => {
  await using env = await freshRepo({ clock: manualClock(START) });
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  const limiter = new RateLimiter(env.repo);
  const forged = "u1\n2030-01-15 ERROR admin logged in";
  const id = await refusal(
    limiter.acquire({ entityId: forged, resource: "api", consume: { rpm: 1 } }),
    {
      code: "INVALID_IDENTIFIER",
      field: "entity_id",
      shows: "u1\\n2030-01-15 ERROR admin logged in",
      cls: InvalidIdentifierError,
    },
  );
  assert.equal(id.value, forged, "the raw value stays on the error");

  await refusal(
    limiter.acquire({
      entityId: "u1",
      resource: "api\u001b[2J",
      consume: { rpm: 1 },
    }),
    {
      code: "INVALID_NAME",
      field: "resource",
      shows: "api\\u001b[2J",
      cls: InvalidNameError,
    },
  );
  await refusal(
    limiter.acquire({
      entityId: "u1",
      resource: "api",
      consume: { "\u001b[31mrpm": 1 },
    }),
    {
      code: "INVALID_NAME",
      field: "consume",
      shows: "\\u001b[31mrpm",
      cls: InvalidNameError,
    },
  );
  const long = "x".repeat(10_000) + "\n";
  const cut = await refusal(
    limiter.acquire({ entityId: long, resource: "api", consume: { rpm: 1 } }),
    { code: "INVALID_IDENTIFIER", field: "entity_id" },
  );
  assert.ok(
    cut.message.includes(`"${"x".repeat(200)}..." (10001 characters)`),
    cut.message.slice(0, 300),
  );
  assert.ok(cut.message.length < 400, "the echo is capped");
});

Deno.test("createEntity() escapes control characters of the id and of metadata keys", async () => {
  await using env = await freshRepo({ clock: manualClock(START) });
  await refusal(env.repo.createEntity("org\r\nx"), {
    code: "INVALID_IDENTIFIER",
    field: "entity_id",
    shows: "org\\r\\nx",
    cls: InvalidIdentifierError,
  });
  const e = await refusal(
    env.repo.createEntity("org", {
      metadata: { "k\u001b[1A": "v".repeat(513) },
    }),
    { field: "metadata.k\u001b[1A" },
  );
  assert.ok(e.message.startsWith("Invalid metadata.k\\u001b[1A "), e.message);
  assert.equal(await env.repo.getEntity("org"), null);
});

// ------------------------------------------------------------ options objects

Deno.test("acquire(), available() and timeUntilAvailable() refuse a missing or non-object options", async () => {
  await using env = await freshRepo({ clock: manualClock(START) });
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  const limiter = new RateLimiter(env.repo);
  env.calls.reset();
  for (
    const [bad, shown] of [[null, "null"], [undefined, "undefined"], [
      "x",
      "x",
    ], [[], "[]"]] as const
  ) {
    await refusal(limiter.acquire(bad as unknown as AcquireOptions), {
      field: "options",
      shows: shown,
    });
    await refusal(
      limiter.acquire(bad as unknown as AcquireOptions, () => "body"),
      { field: "options", shows: shown },
    );
    await refusal(limiter.available(bad as unknown as CapacityOptions), {
      field: "options",
      shows: shown,
    });
    await refusal(
      limiter.timeUntilAvailable(
        bad as unknown as CapacityOptions & { needed: Record<string, number> },
      ),
      { field: "options", shows: shown },
    );
  }
  assert.equal(env.calls.total(), 0, "validated before any call");
});

// ------------------------------------------------------------ timeUntilAvailable

Deno.test("timeUntilAvailable() refuses a missing or non-object needed", async () => {
  await using env = await freshRepo({ clock: manualClock(START) });
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  const limiter = new RateLimiter(env.repo);
  for (
    const [bad, shown] of [
      [undefined, "undefined"],
      [null, "null"],
      [
        5,
        "5",
      ],
      ["rpm", "rpm"],
      [[1], "[1]"],
    ] as const
  ) {
    const e = await refusal(
      limiter.timeUntilAvailable({
        entityId: "u1",
        resource: "api",
        needed: bad as unknown as Record<string, number>,
      }),
      { field: "needed", shows: shown },
    );
    assert.match(e.message, /must map limit names to whole token amounts/);
  }
  await refusal(
    limiter.timeUntilAvailable(
      { entityId: "u1", resource: "api" } as unknown as
        & CapacityOptions
        & { needed: Record<string, number> },
    ),
    { field: "needed", shows: "undefined" },
  );
});

Deno.test("timeUntilAvailable() refuses negative, fractional and non-finite amounts", async () => {
  await using env = await freshRepo({ clock: manualClock(START) });
  await env.repo.setSystemDefaults([Limit.perMinute("rpm", 10)]);
  const limiter = new RateLimiter(env.repo);
  for (
    const [amount, shown, says] of [
      [-1, "-1", /cannot be negative; give 0 or more tokens/],
      [1.5, "1.5", /whole number of tokens/],
      [NaN, "NaN", /whole number of tokens/],
      [Infinity, "Infinity", /whole number of tokens/],
      [-Infinity, "-Infinity", /whole number of tokens/],
    ] as const
  ) {
    const e = await refusal(
      limiter.timeUntilAvailable({
        entityId: "u1",
        resource: "api",
        needed: { rpm: amount },
      }),
      { field: "needed.rpm", shows: shown },
    );
    assert.match(e.message, says);
  }
  // Negative amounts were answered 0 before; valid ones still are answered.
  assert.equal(
    await limiter.timeUntilAvailable({
      entityId: "u1",
      resource: "api",
      needed: { rpm: 0 },
    }),
    0,
  );
  assert.equal(
    await limiter.timeUntilAvailable({
      entityId: "u1",
      resource: "api",
      needed: {},
    }),
    0,
  );
});

Deno.test("timeUntilAvailable() refuses names no resolved limit has and lists the configured ones", async () => {
  await using env = await freshRepo({ clock: manualClock(START) });
  const repo = env.repo;
  await repo.setSystemDefaults([
    Limit.perMinute("rpm", 10),
    Limit.perMinute("tpm", 1000),
  ]);
  const limiter = new RateLimiter(repo);
  const e = await refusal(
    limiter.timeUntilAvailable({
      entityId: "u1",
      resource: "api",
      needed: { rpm: 1, rpmm: 1 },
    }),
    { field: "needed", shows: "rpmm" },
  );
  assert.equal(e.value, "rpmm");
  assert.match(
    e.message,
    /no limit "rpmm" is configured for entity "u1" and resource "api" \(configured: rpm, tpm\); ask only for configured limits$/,
  );
  await refusal(
    limiter.timeUntilAvailable({
      entityId: "u1",
      resource: "api",
      needed: { rpm: 1 },
      limits: [Limit.perMinute("tpm", 5)],
    }),
    { field: "needed", shows: "rpm" },
  );
  await refusal(
    limiter.timeUntilAvailable({
      entityId: "u1",
      resource: "api",
      needed: { "bad name": 1 },
    }),
    {
      code: "INVALID_NAME",
      field: "needed",
      shows: "bad name",
      cls: InvalidNameError,
    },
  );

  // A name only the cascading parent has is a configured name.
  await repo.createEntity("org");
  await repo.createEntity("key", { parentId: "org", cascade: true });
  await repo.setLimits("key", [Limit.perMinute("rpm", 10)], {
    resource: "api",
  });
  await repo.setLimits("org", [Limit.perMinute("rph", 60)], {
    resource: "api",
  });
  assert.equal(
    await limiter.timeUntilAvailable({
      entityId: "key",
      resource: "api",
      needed: { rph: 1, rpm: 1 },
    }),
    0,
  );
  await refusal(
    limiter.timeUntilAvailable({
      entityId: "key",
      resource: "api",
      needed: { tpm: 1 },
    }),
    { field: "needed", shows: "tpm" },
  );
});

// ------------------------------------------------------------ system defaults

Deno.test("setSystemDefaults([]) is refused like the other levels and the system limits stay", async () => {
  await using env = await freshRepo({ clock: manualClock(START) });
  const repo = env.repo;
  await repo.setSystemDefaults([Limit.perMinute("rpm", 10)], {
    onUnavailable: "allow",
  });
  env.calls.reset();
  const e = await refusal(repo.setSystemDefaults([]), {
    field: "limits",
    shows: "[]",
  });
  assert.match(e.message, /deleteSystemDefaults/);
  await refusal(repo.setSystemDefaults([], { onUnavailable: "block" }), {
    field: "limits",
  });
  assert.equal(env.calls.total(), 0, "validated before any call");
  const d = await repo.getSystemDefaults();
  assert.deepEqual(d.limits.map((l) => l.name), ["rpm"]);
  assert.equal(d.onUnavailable, "allow");
  // The same refusal as the entity and resource levels.
  await refusal(repo.setLimits("u1", []), { field: "limits", shows: "[]" });
  await refusal(repo.setResourceDefaults("api", []), {
    field: "limits",
    shows: "[]",
  });
  // The way to remove them still works.
  await repo.deleteSystemDefaults();
  assert.deepEqual((await repo.getSystemDefaults()).limits, []);
});

// ------------------------------------------------------------ sizes

Deno.test("createEntity() refuses a 450 KB display name before any DynamoDB call", async () => {
  await using env = await freshRepo({ clock: manualClock(START) });
  const repo = env.repo;
  const name = "n".repeat(450 * 1024);
  env.calls.reset();
  const e = await refusal(repo.createEntity("org", { name }), {
    field: "name",
  });
  assert.equal(e.value, name);
  assert.match(
    e.message,
    /\.\.\." \(460800 characters\): display name is 460800 characters long; the maximum is 256$/,
  );
  assert.ok(e.message.length < 500, "the echo is capped");
  assert.equal(env.calls.total(), 0, "nothing reached DynamoDB");
  assert.equal(await repo.getEntity("org"), null);

  // The maximum is accepted and stored as is.
  const max = "n".repeat(256);
  assert.equal((await repo.createEntity("org", { name: max })).name, max);
  const meta = await rawGet(
    env.client,
    repo.tableName,
    `${repo.namespaceId}/ENTITY#org`,
    "#META",
  );
  assert.equal(meta?.["name"]?.S, max);
  await refusal(
    repo.createEntity("org2", { name: 42 as unknown as string }),
    { field: "name", shows: "42" },
  );
});

Deno.test("createEntity() refuses oversized metadata before any DynamoDB call and accepts the maximum", async () => {
  await using env = await freshRepo({ clock: manualClock(START) });
  const repo = env.repo;
  env.calls.reset();
  const many = Object.fromEntries(
    Array.from({ length: 51 }, (_, i) => [`k${i}`, "v"]),
  );
  assert.match(
    (await refusal(repo.createEntity("org", { metadata: many }), {
      field: "metadata",
    })).message,
    /has 51 entries; the maximum is 50$/,
  );
  assert.match(
    (await refusal(
      repo.createEntity("org", { metadata: { ["k".repeat(129)]: "v" } }),
      { field: "metadata" },
    )).message,
    /key is 129 characters long; the maximum is 128$/,
  );
  assert.match(
    (await refusal(
      repo.createEntity("org", {
        metadata: { notes: "v".repeat(450 * 1024) },
      }),
      { field: "metadata.notes" },
    )).message,
    /\(460800 characters\): value is 460800 characters long; the maximum is 512$/,
  );
  await refusal(
    repo.createEntity("org", {
      metadata: [] as unknown as Record<string, string>,
    }),
    { field: "metadata", shows: "[]" },
  );
  assert.equal(env.calls.total(), 0, "nothing reached DynamoDB");

  // The largest allowed entity is stored (well under the 400 KB item limit).
  const full = Object.fromEntries(
    Array.from({ length: 50 }, (_, i) => [
      `k${i}`.padEnd(128, "k"),
      "\u{1F600}".repeat(256),
    ]),
  );
  const created = await repo.createEntity("big", {
    name: "\u{1F600}".repeat(128),
    metadata: full,
  });
  assert.deepEqual(created.metadata, full);
  assert.deepEqual((await repo.getEntity("big"))?.metadata, full);
});

Deno.test("Repository.open with a table name DynamoDB refuses is a ValidationError, not an outage", async () => {
  const { client } = await localClient();
  try {
    const err = await Repository.open({ client, stack: "ab" }).then(
      () => null,
      (e) => e,
    );
    assert.ok(err instanceof ValidationError, String(err));
    assert.equal(err.field, "stack");
    assert.equal(err.retryable, false);
  } finally {
    client.destroy();
  }
});
