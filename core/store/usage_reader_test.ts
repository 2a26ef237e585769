import assert from "node:assert/strict";
import type {
  AttributeValue,
  QueryCommandInput,
} from "@aws-sdk/client-dynamodb";
import { gsi2PkResource, gsi2SkUsage, pkEntity, skUsage } from "../keys.ts";
import { snapshotUpdate, type SnapshotWindow } from "../usage.ts";
import type { TableClient } from "./table.ts";
import { readUsageSnapshots } from "./usage_reader.ts";

type Item = Record<string, AttributeValue>;

/**
 * A table in memory that applies snapshot updates the way DynamoDB does for
 * the expressions `snapshotUpdate` builds (SET a = v, SET a =
 * if_not_exists(a, v), ADD n v) and answers key-condition queries on the
 * table or GSI2, in key order, in pages of two.
 */
function memoryTable() {
  const items = new Map<string, Item>();
  return {
    items,
    apply(u: ReturnType<typeof snapshotUpdate>): void {
      const id = `${u.Key?.["PK"]?.S}\u0000${u.Key?.["SK"]?.S}`;
      const item: Item = items.get(id) ?? { ...u.Key };
      const names = u.ExpressionAttributeNames ?? {};
      const values = u.ExpressionAttributeValues ?? {};
      const name = (n: string) => names[n] ?? n;
      const [set = "", add = ""] = (u.UpdateExpression ?? "").replace(
        /^SET /,
        "",
      ).split(" ADD ");
      for (const clause of set.split(/, (?![^(]*\))/)) {
        const m = /^(\S+) = (if_not_exists\(\S+, (\S+)\)|(\S+))$/.exec(clause);
        assert.ok(m, clause);
        const attr = name(m[1] as string);
        if (m[3] !== undefined) {
          item[attr] ??= values[m[3]] as AttributeValue;
        } else item[attr] = values[m[4] as string] as AttributeValue;
      }
      for (const clause of add.split(", ")) {
        const [n, v] = clause.split(" ");
        const attr = name(n as string);
        const before = Number(item[attr]?.N ?? "0");
        item[attr] = { N: String(before + Number(values[v as string]?.N)) };
      }
      items.set(id, item);
    },
    io: {
      async *queryPages(input: Omit<QueryCommandInput, "TableName">) {
        const gsi = input.IndexName === "GSI2";
        const [pkA, skA] = gsi ? ["GSI2PK", "GSI2SK"] : ["PK", "SK"];
        const v = input.ExpressionAttributeValues ?? {};
        const hits = [...items.values()]
          .filter((i) =>
            i[pkA]?.S === v[":pk"]?.S &&
            (i[skA]?.S ?? "").startsWith(v[":sk"]?.S ?? "")
          )
          .sort((a, b) =>
            (a[skA]?.S ?? "") < (b[skA]?.S ?? "")
              ? -1
              : (a[skA]?.S ?? "") > (b[skA]?.S ?? "")
              ? 1
              : 0
          );
        for (let i = 0; i < hits.length; i += 2) {
          yield await Promise.resolve(hits.slice(i, i + 2));
        }
      },
    } as unknown as TableClient,
  };
}

const WINDOWS: readonly SnapshotWindow[] = ["monthly", "daily", "hourly"];

/** Writes what the aggregator writes for `tokens` rpm at `iso` (coarsest window first; a finer one starting with it gets its own item). */
function acquire(
  t: ReturnType<typeof memoryTable>,
  resource: string,
  iso: string,
  tokens: number,
): void {
  const at = Date.parse(iso);
  const d = new Date(at);
  const key = (w: SnapshotWindow): string =>
    w === "hourly"
      ? `${iso.slice(0, 13)}:00:00Z`
      : w === "daily"
      ? `${iso.slice(0, 10)}T00:00:00Z`
      : `${iso.slice(0, 7)}-01T00:00:00Z`;
  assert.equal(d.toISOString().slice(0, 13), iso.slice(0, 13));
  const seen = new Set<string>();
  for (const w of WINDOWS) {
    const k = key(w);
    t.apply(snapshotUpdate("t", {
      ns: "ns1",
      entityId: "e1",
      resource,
      window: w,
      windowKey: k,
      counters: new Map([["rpm", BigInt(tokens)]]),
      events: 1,
      ttl: 1_900_000_000,
      windowItem: seen.has(k),
    }));
    seen.add(k);
  }
}

async function read(
  t: ReturnType<typeof memoryTable>,
  filter: { entityId?: string; resource?: string },
  windowType: SnapshotWindow,
): Promise<Record<string, number>> {
  const { snapshots, more } = await readUsageSnapshots(t.io, {
    ...filter,
    windowType,
    namespaceId: "ns1",
  });
  assert.equal(more, false);
  const out: Record<string, number> = {};
  for (const s of snapshots) {
    const k = `${s.resource} ${s.windowStart}`;
    assert.equal(out[k], undefined, `one ${windowType} snapshot ${k}`);
    assert.equal(s.windowType, windowType);
    out[k] = s.counters["rpm"] ?? NaN;
  }
  return out;
}

Deno.test("readUsageSnapshots: hour 00, day 1 at 00:xx and an ordinary hour each read back as one snapshot per window, by entity, entity and resource, and resource", async () => {
  const t = memoryTable();
  acquire(t, "gpt-4", "2024-02-01T00:10:00Z", 2); // day 1, hour 00
  acquire(t, "gpt-4", "2024-02-01T00:50:00Z", 3);
  acquire(t, "gpt-4", "2024-02-01T07:00:00Z", 5); // an ordinary hour
  acquire(t, "gpt-4", "2024-02-15T00:20:00Z", 7); // hour 00
  acquire(t, "gpt-4o", "2024-02-15T00:30:00Z", 11); // a resource gpt-4 prefixes
  const want = {
    hourly: {
      "gpt-4 2024-02-01T00:00:00Z": 5,
      "gpt-4 2024-02-01T07:00:00Z": 5,
      "gpt-4 2024-02-15T00:00:00Z": 7,
    },
    daily: {
      "gpt-4 2024-02-01T00:00:00Z": 10,
      "gpt-4 2024-02-15T00:00:00Z": 7,
    },
    monthly: { "gpt-4 2024-02-01T00:00:00Z": 17 },
  };
  for (const w of WINDOWS) {
    assert.deepEqual(
      await read(t, { entityId: "e1", resource: "gpt-4" }, w),
      want[w],
    );
    assert.deepEqual(await read(t, { resource: "gpt-4" }, w), want[w]);
    const all = await read(t, { entityId: "e1" }, w);
    assert.deepEqual(
      Object.fromEntries(
        Object.entries(all).filter(([k]) => k.startsWith("gpt-4 ")),
      ),
      want[w],
    );
  }
  // 3 + 2 + 1 items of gpt-4, 2 of gpt-4o (its hour 00 and day), 1 month.
  assert.equal(t.items.size, 6 + 3);
});

Deno.test("readUsageSnapshots: an hour 00 item the Python aggregator wrote reads as hourly with each window's increment (doubled) and no daily, until this aggregator relabels it", async () => {
  const t = memoryTable();
  const key = "2024-02-15T00:00:00Z";
  t.items.set(`${pkEntity("ns1", "e1")}\u0000${skUsage("gpt-4", key)}`, {
    PK: { S: pkEntity("ns1", "e1") },
    SK: { S: skUsage("gpt-4", key) },
    "entity_id": { S: "e1" },
    resource: { S: "gpt-4" },
    window: { S: "hourly" },
    "window_start": { S: key },
    rpm: { N: "8" },
    "total_events": { N: "2" },
    GSI2PK: { S: gsi2PkResource("ns1", "gpt-4") },
    GSI2SK: { S: gsi2SkUsage(key, "e1") },
  });
  assert.deepEqual(await read(t, { entityId: "e1" }, "hourly"), {
    [`gpt-4 ${key}`]: 8,
  });
  assert.deepEqual(await read(t, { entityId: "e1" }, "daily"), {});
  acquire(t, "gpt-4", "2024-02-15T00:40:00Z", 1);
  assert.deepEqual(await read(t, { resource: "gpt-4" }, "daily"), {
    [`gpt-4 ${key}`]: 9,
  });
  assert.deepEqual(await read(t, { resource: "gpt-4" }, "hourly"), {
    [`gpt-4 ${key}`]: 1,
  });
});
