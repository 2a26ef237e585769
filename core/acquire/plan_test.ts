import assert from "node:assert/strict";
import { paramsOf } from "../bucket.ts";
import type { BucketItem } from "../bucket_item.ts";
import { RequestExceedsCapacity, ValidationError } from "../errors.ts";
import { Limit } from "../limit.ts";
import {
  afterWrite,
  chargeSide,
  checkSatisfiable,
  contendedStatuses,
  leaseEntries,
  planWrite,
  type Side,
  sideRef,
  slowWrite,
} from "./plan.ts";

const rps = Limit.custom("rps", 10, 10, 1); // 10 tokens, 10 per second
const tpm = Limit.custom("tpm", 100, 100, 60);
const resolved = { limits: [rps, tpm], source: "system" as const };

function side(charge: Record<string, number>, shards = 1): Side {
  return {
    entityId: "k",
    resolved,
    charge: new Map(
      Object.entries(charge).map(([n, a]) => [n, BigInt(a) * 1000n]),
    ),
    shard: 0,
    shards,
  };
}

function item(tk: bigint, rf: bigint): BucketItem {
  return {
    entityId: "k",
    resource: "api",
    shard: 0,
    rf,
    shardCount: 1,
    cascade: false,
    parentId: null,
    ttl: null,
    limits: new Map([
      ["rps", { tk, params: paramsOf(rps), tc: 5000n }],
      ["tpm", { tk: 100_000n, params: paramsOf(tpm), tc: 0n }],
    ]),
  };
}

Deno.test("chargeSide: strict refuses an unknown name, a parent skips it; zero is not charged", () => {
  const consume = new Map([["rps", 2000n], ["tpm", 0n], ["rpd", 1000n]]);
  assert.throws(
    () => chargeSide("k", resolved, consume, 1, true, Math.random),
    ValidationError,
  );
  const parent = chargeSide("p", resolved, consume, 1, false, () => {
    throw new Error("one shard needs no random number");
  });
  assert.deepEqual([...parent.charge], [["rps", 2000n]]);
  assert.equal(parent.shard, 0);
  assert.equal(
    chargeSide("p", resolved, consume, 4, false, () => 0.6).shard,
    2,
  );
});

Deno.test("checkSatisfiable: more than a (shard's) capacity is refused before any write", () => {
  checkSatisfiable(side({ rps: 10 }), "api");
  assert.throws(() => checkSatisfiable(side({ rps: 11 }), "api"), (e) => {
    assert.ok(e instanceof RequestExceedsCapacity);
    assert.equal(e.statuses[0]?.limitName, "rps");
    assert.equal(e.statuses[0]?.available, 10);
    return true;
  });
  assert.throws(
    () => checkSatisfiable(side({ rps: 6 }, 2), "api"),
    RequestExceedsCapacity,
  );
});

Deno.test("planWrite: a new item starts full and is created with rf a holdback ahead of now (the create may land later: no refill is credited for that time)", () => {
  const plan = planWrite("ns", side({ rps: 3 }), "api", null, 5000, {
    cascade: false,
    parentId: null,
  });
  assert.deepEqual(plan.ref, sideRef("ns", side({}), "api"));
  // rps 10 per second: 1% of the capacity refills in 10 ms.
  assert.equal(plan.rfAfter, 5000n + 10n);
  assert.ok(plan.statuses.every((s) => !s.exceeded));
  const r = plan.limits.find((l) => l.name === "rps");
  assert.equal(r?.tkAfter, 7000n);
  assert.equal(r?.consumed, 3000n);
  assert.equal(plan.limits.at(-1)?.name, "wcu");
  assert.equal(plan.wcuShort, false);
  const w = slowWrite(plan, 123);
  assert.ok(w.kind === "slow" && w.write.create && w.write.expectedRf === 0n);
  const after = afterWrite(plan, "remove");
  assert.equal(after.limits.get("rps")?.tk, 7000n);
  assert.equal(after.limits.get("rps")?.tc, 3000n);
  assert.equal(after.ttl, null);
});

Deno.test("planWrite: refills since rf, refuses what the refilled balance cannot cover", () => {
  // 1 token stored at rf=1000; 100 ms later 1 more has refilled.
  const read = item(1000n, 1000n);
  const ok = planWrite("ns", side({ rps: 2 }), "api", read, 1100, {
    cascade: false,
    parentId: null,
  });
  assert.ok(ok.statuses.every((s) => !s.exceeded));
  assert.equal(ok.limits.find((l) => l.name === "rps")?.tkAfter, 0n);
  assert.ok(ok.rfAfter > read.rf); // the refill span claimed moves rf
  assert.equal(afterWrite(ok, null).limits.get("rps")?.tc, 7000n);

  const refused = planWrite("ns", side({ rps: 3 }), "api", read, 1100, {
    cascade: false,
    parentId: null,
  });
  const s = refused.statuses.find((x) => x.limitName === "rps");
  assert.equal(s?.exceeded, true);
  assert.equal(s?.available, 2);
  // 1 token at 10/s, rounded up. tpm is full and rps is not: rf is not put
  // ahead (rps would lose the refill of the holdback), tpm is held at its
  // ceiling 10 ms on (the holdback: 1% of rps's capacity at 10 a second).
  assert.equal(refused.rfAfter, 1100n);
  assert.equal(s?.retryAfterSeconds, 0.101);
  const r = refused.limits.find((l) => l.name === "rps");
  assert.equal(r?.consumed, 0n);
  assert.equal(r?.tkAfter, 2000n);
  const t = refused.limits.find((l) => l.name === "tpm");
  assert.equal(t?.tkAfter, 100_000n - (10n * 100_000n) / 60_000n);
  assert.equal(t?.exact, true); // its refill was cut: right only for the read balance
  const w = slowWrite(refused, null);
  assert.ok(
    w.kind === "slow" && !w.write.create && w.write.expectedRf === 1000n,
  );
});

Deno.test("contendedStatuses refuse the charged limits with the time to the next token", () => {
  const plan = planWrite("ns", side({ rps: 2 }), "api", null, 0, {
    cascade: false,
    parentId: null,
  });
  const statuses = contendedStatuses([plan]);
  assert.deepEqual(
    statuses.map((s) => [s.limitName, s.exceeded]),
    [["rps", true], ["tpm", false]],
  );
  assert.ok((statuses[0]?.retryAfterSeconds ?? 0) > 0);
});

Deno.test("leaseEntries: one entry per resolved limit, charged or not", () => {
  const s = side({ rps: 2 }, 2);
  const entries = leaseEntries(s, sideRef("ns", s, "api", 1));
  assert.deepEqual(
    entries.map((e) => [e.limit.name, e.consumed, e.ref.shard, e.params.cp]),
    [["rps", 2000n, 1, 5000n], ["tpm", 0n, 1, 50_000n]],
  );
});
