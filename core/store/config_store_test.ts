import assert from "node:assert/strict";
import {
  BatchGetItemCommand,
  DeleteItemCommand,
  GetItemCommand,
  PutItemCommand,
  TransactWriteItemsCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import type { Clock } from "../clock.ts";
import type { Item } from "../expr.ts";
import { Limit } from "../limit.ts";
import { AuditLog } from "./audit_log.ts";
import { type ConfigBucketHooks, ConfigStore } from "./config_store.ts";
import { createTableClient } from "./table.ts";

/** A table in a map: the reads and writes the config store and the audit log send. */
function fakeTable(): {
  items: Map<string, Item>;
  send(c: unknown): Promise<unknown>;
} {
  const items = new Map<string, Item>();
  const keyOf = (k: Item) => `${k["PK"]?.S}|${k["SK"]?.S}`;
  function send(command: unknown): Promise<unknown> {
    if (command instanceof GetItemCommand) {
      return Promise.resolve({
        Item: items.get(keyOf(command.input.Key ?? {})),
      });
    }
    if (command instanceof BatchGetItemCommand) {
      const req = Object.values(command.input.RequestItems ?? {})[0];
      const found = (req?.Keys ?? []).map((k) => items.get(keyOf(k)))
        .filter((i): i is Item => i !== undefined);
      return Promise.resolve({ Responses: { t: found } });
    }
    if (command instanceof PutItemCommand) {
      const item = command.input.Item ?? {};
      items.set(keyOf(item), item);
      return Promise.resolve({});
    }
    if (command instanceof DeleteItemCommand) {
      const key = keyOf(command.input.Key ?? {});
      if (command.input.ConditionExpression && !items.has(key)) {
        return Promise.reject({ name: "ConditionalCheckFailedException" });
      }
      items.delete(key);
      return Promise.resolve({});
    }
    if (command instanceof TransactWriteItemsCommand) {
      const put = command.input.TransactItems?.[0]?.Put;
      const item = put?.Item ?? {};
      if (items.has(keyOf(item))) {
        return Promise.reject({
          name: "TransactionCanceledException",
          CancellationReasons: [{ Code: "ConditionalCheckFailed" }, {
            Code: "None",
          }],
        });
      }
      items.set(keyOf(item), item);
      return Promise.resolve({});
    }
    if (command instanceof UpdateItemCommand) return Promise.resolve({}); // registries: not modelled
    return Promise.reject(
      new TypeError("Cannot send this command to the fake"),
    );
  }
  return { items, send };
}

function world(cacheTtlSeconds = 60) {
  const table = fakeTable();
  const clock: Clock = {
    now: () => 1_700_000_000_000,
    sleep: () => Promise.resolve(),
  };
  const io = createTableClient(table, { tableName: "t", clock });
  const settled: string[] = [];
  const buckets: ConfigBucketHooks = {
    settle(entityId, resource) {
      settled.push(`${entityId}/${resource}`);
      return Promise.resolve();
    },
    ttl: () => null,
  };
  const audit = new AuditLog(io, "ns1", {
    ulid: (now) => `E${now}${Math.random()}`,
    principal: () => Promise.resolve(null),
    retentionDays: (): Promise<number | null> => config.auditRetentionDays(),
    defaultRetentionDays: 90,
  });
  const config: ConfigStore = new ConfigStore(io, "ns1", {
    cacheTtlSeconds,
    audit,
    buckets,
  });
  const audits = () =>
    [...table.items.values()].filter((i) =>
      i["PK"]?.S?.startsWith("ns1/AUDIT#")
    )
      .map((i) => `${i["action"]?.S} ${i["entity_id"]?.S}`).sort();
  return { config, table, settled, audits };
}

const rpm = (n: number) => new Limit("rpm", n, n, 60);

Deno.test("ConfigStore resolves the four levels, most specific first, and sees each change at once", async () => {
  const { config } = world();
  assert.equal(await config.resolveLimits("e", "api"), null);
  await config.set({ level: "system" }, [rpm(1)]);
  assert.equal((await config.resolveLimits("e", "api"))?.source, "system");
  await config.set({ level: "resource", resource: "api" }, [rpm(2)]);
  assert.equal((await config.resolveLimits("e", "api"))?.source, "resource");
  await config.set({ level: "entity", entityId: "e", resource: "_default_" }, [
    rpm(3),
  ]);
  assert.equal(
    (await config.resolveLimits("e", "api"))?.source,
    "entity_default",
  );
  await config.set({ level: "entity", entityId: "e", resource: "api" }, [
    rpm(4),
  ]);
  const got = await config.resolveLimits("e", "api");
  assert.equal(got?.source, "entity");
  assert.equal(got?.limits[0]?.capacity, 4);
  await config.delete({ level: "entity", entityId: "e", resource: "api" });
  assert.equal(
    (await config.resolveLimits("e", "api"))?.source,
    "entity_default",
  );
});

Deno.test("ConfigStore.set() stores, reads back and audits each level; delete() removes it", async () => {
  const { config, settled, audits } = world();
  const targets = [
    { level: "entity", entityId: "e", resource: "api" },
    { level: "resource", resource: "api" },
    { level: "system" },
  ] as const;
  for (const t of targets) {
    await config.set(t, [rpm(5)]);
    assert.deepEqual((await config.get(t)).map((l) => l.toDict()), [
      rpm(5).toDict(),
    ]);
  }
  assert.deepEqual(settled, ["e/api"]);
  for (const t of targets) {
    await config.delete(t);
    assert.deepEqual(await config.get(t), []);
  }
  assert.deepEqual(audits(), [
    "limits_deleted $RESOURCE:api",
    "limits_deleted $SYSTEM",
    "limits_deleted e",
    "limits_set $RESOURCE:api",
    "limits_set $SYSTEM",
    "limits_set e",
  ]);
});

Deno.test("ConfigStore.set() refuses an empty list, naming the delete call of the level", async () => {
  const { config } = world();
  for (
    const [target, call] of [
      [{ level: "entity", entityId: "e", resource: "api" }, "deleteLimits"],
      [{ level: "resource", resource: "api" }, "deleteResourceDefaults"],
      [{ level: "system" }, "deleteSystemDefaults"],
    ] as const
  ) {
    await assert.rejects(config.set(target, []), (e: Error) => {
      assert.equal(e.name, "ValidationError");
      assert.match(e.message, new RegExp(call));
      return true;
    });
  }
});

Deno.test("ConfigStore keeps the stored audit retention and on_unavailable of the system level", async () => {
  const { config } = world();
  await config.set({ level: "system" }, [rpm(1)], {
    onUnavailable: "allow",
    auditRetentionDays: 30,
  });
  await config.set({ level: "system" }, [rpm(2)]);
  const system = await config.getSystem();
  assert.equal(system.auditRetentionDays, 30);
  assert.equal(system.onUnavailable, null);
  assert.equal(await config.resolveOnUnavailable(), "allow"); // the last known value
  await assert.rejects(
    config.set({ level: "system" }, [rpm(1)], { auditRetentionDays: 0 }),
    { name: "ValidationError" },
  );
});

Deno.test("ConfigStore deleting a missing entity config writes nothing and audits nothing", async () => {
  const { config, audits } = world();
  await config.delete({ level: "entity", entityId: "e", resource: "api" });
  assert.deepEqual(audits(), []);
});
