import assert from "node:assert/strict";
import { ValidationError } from "./errors.ts";
import {
  counterAttribute,
  counterName,
  decodeSnapshot,
  parseSnapshotWindows,
  snapshotUpdate,
  windowEnd,
  windowKey,
} from "./usage.ts";

const at = (iso: string): number => Date.parse(iso);

Deno.test("windowKey: hour, day and month boundaries in UTC", () => {
  assert.equal(
    windowKey("hourly", at("2024-01-15T23:59:59.999Z")),
    "2024-01-15T23:00:00Z",
  );
  assert.equal(
    windowKey("hourly", at("2024-01-16T00:00:00Z")),
    "2024-01-16T00:00:00Z",
  );
  assert.equal(
    windowKey("daily", at("2024-12-31T23:59:59Z")),
    "2024-12-31T00:00:00Z",
  );
  assert.equal(
    windowKey("monthly", at("2025-01-01T00:00:00Z")),
    "2025-01-01T00:00:00Z",
  );
  assert.equal(
    windowKey("monthly", at("2024-02-29T12:00:00Z")),
    "2024-02-01T00:00:00Z",
  );
});

Deno.test("windowEnd: last second of the window; December rolls over", () => {
  assert.equal(
    windowEnd("hourly", "2024-01-15T14:00:00Z"),
    "2024-01-15T14:59:59Z",
  );
  assert.equal(
    windowEnd("daily", "2024-01-15T00:00:00Z"),
    "2024-01-15T23:59:59Z",
  );
  assert.equal(
    windowEnd("monthly", "2024-12-01T00:00:00Z"),
    "2024-12-31T23:59:59Z",
  );
  assert.equal(
    windowEnd("monthly", "2024-02-01T00:00:00Z"),
    "2024-02-29T23:59:59Z",
  );
  assert.equal(
    windowEnd("weekly", "2024-02-01T00:00:00Z"),
    "2024-02-01T00:00:00Z",
  );
});

Deno.test("parseSnapshotWindows: names the bad window", () => {
  assert.deepEqual(parseSnapshotWindows("hourly, monthly,hourly"), [
    "hourly",
    "monthly",
  ]);
  assert.throws(
    () => parseSnapshotWindows("hourly,weekly"),
    (e: unknown) =>
      e instanceof ValidationError && e.field === "window" &&
      e.value === "weekly",
  );
  assert.throws(() => parseSnapshotWindows(" , "), ValidationError);
});

Deno.test("counters: a limit named like a snapshot attribute is escaped and read back", () => {
  assert.equal(counterAttribute("rpm"), "rpm");
  assert.equal(counterAttribute("ttl"), "limit#ttl");
  assert.equal(counterAttribute("total_events"), "limit#total_events");
  assert.equal(counterName("limit#ttl"), "ttl");
  assert.equal(counterName("ttl"), null);
  assert.equal(counterName("rpm"), "rpm");
});

Deno.test("snapshotUpdate: one atomic create-and-add; colliding names cannot overwrite the item's own attributes", () => {
  const u = snapshotUpdate("t", {
    ns: "ns1",
    entityId: "e1",
    resource: "gpt-4",
    window: "hourly",
    windowKey: "2024-01-15T14:00:00Z",
    counters: new Map([["rpm", 2n], ["ttl", 5n], ["window", -1n]]),
    events: 2,
    ttl: 1_700_000_000,
  });
  assert.deepEqual(u.Key, {
    PK: { S: "ns1/ENTITY#e1" },
    SK: { S: "#USAGE#gpt-4#2024-01-15T14:00:00Z" },
  });
  const names = Object.values(u.ExpressionAttributeNames ?? {});
  assert.ok(names.includes("limit#ttl"));
  assert.ok(names.includes("limit#window"));
  // Each attribute is referenced once in ADD; `ttl` and `window` only in SET.
  const expr = u.UpdateExpression ?? "";
  const [setPart, addPart] = expr.split(" ADD ");
  assert.ok(setPart?.startsWith("SET "));
  const nameOf = (placeholder: string): string =>
    u.ExpressionAttributeNames?.[placeholder] ?? placeholder;
  const added = (addPart ?? "").split(", ").map((c) =>
    nameOf(c.split(" ")[0] ?? "")
  );
  assert.deepEqual(added.sort(), [
    "limit#ttl",
    "limit#window",
    "rpm",
    "total_events",
  ]);
  const values = Object.values(u.ExpressionAttributeValues ?? {}).map((v) =>
    v.S ?? v.N
  );
  assert.ok(values.includes("ns1/RESOURCE#gpt-4"));
  assert.ok(values.includes("USAGE#2024-01-15T14:00:00Z#e1"));
  assert.ok(values.includes("1700000000"));
});

Deno.test("snapshotUpdate: a window whose key is a coarser one's writes its own #{window} item, same GSI2 keys, window label set on every write", () => {
  const base = {
    ns: "ns1",
    entityId: "e1",
    resource: "gpt-4",
    windowKey: "2024-02-01T00:00:00Z",
    counters: new Map([["rpm", 2n]]),
    events: 1,
    ttl: 1_700_000_000,
  };
  const own = snapshotUpdate("t", {
    ...base,
    window: "hourly",
    windowItem: true,
  });
  const shared = snapshotUpdate("t", { ...base, window: "monthly" });
  assert.equal(own.Key?.["SK"]?.S, "#USAGE#gpt-4#2024-02-01T00:00:00Z#hourly");
  assert.equal(shared.Key?.["SK"]?.S, "#USAGE#gpt-4#2024-02-01T00:00:00Z");
  for (const [u, window] of [[own, "hourly"], [shared, "monthly"]] as const) {
    const values = Object.values(u.ExpressionAttributeValues ?? {}).map((v) =>
      v.S
    );
    assert.ok(values.includes("ns1/RESOURCE#gpt-4"));
    assert.ok(values.includes("USAGE#2024-02-01T00:00:00Z#e1"));
    const name = Object.entries(u.ExpressionAttributeNames ?? {}).find((
      [, n],
    ) => n === "window")?.[0];
    const value = Object.entries(u.ExpressionAttributeValues ?? {}).find((
      [, v],
    ) => v.S === window)?.[0];
    assert.ok(
      (u.UpdateExpression ?? "").includes(`${name} = ${value}`),
      u.UpdateExpression,
    );
  }
});

Deno.test("decodeSnapshot: counters, escaped counters, events and window end", () => {
  const s = decodeSnapshot({
    PK: { S: "ns1/ENTITY#e1" },
    SK: { S: "#USAGE#r#2024-01-15T00:00:00Z" },
    entity_id: { S: "e1" },
    resource: { S: "r" },
    window: { S: "daily" },
    window_start: { S: "2024-01-15T00:00:00Z" },
    rpm: { N: "7" },
    "limit#ttl": { N: "3" },
    ttl: { N: "1900000000" },
    total_events: { N: "4" },
  });
  assert.deepEqual(s, {
    entityId: "e1",
    resource: "r",
    windowType: "daily",
    windowStart: "2024-01-15T00:00:00Z",
    windowEnd: "2024-01-15T23:59:59Z",
    counters: { rpm: 7, ttl: 3 },
    totalEvents: 4,
  });
});
