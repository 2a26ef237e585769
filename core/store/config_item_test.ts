import assert from "node:assert/strict";
import { Limit } from "../limit.ts";
import { limitAttrs, limitsFromItem, slotFrom } from "./config_item.ts";
import { bucketTtlPolicy } from "./bucket_admin.ts";

Deno.test("limitAttrs() and limitsFromItem() round-trip limits as l_{name}_cp/ra/rp attributes", () => {
  const limits = [
    new Limit("rpm", 100, 100, 60),
    new Limit("tpm", 5000, 5000, 60),
  ];
  const item = limitAttrs(limits);
  assert.deepEqual(item["l_rpm_cp"], { N: "100" });
  assert.deepEqual(item["l_tpm_rp"], { N: "60" });
  assert.deepEqual(
    limitsFromItem({ ...item, "config_version": { N: "1" } }).map((l) =>
      l.toDict()
    ),
    limits.map((l) => l.toDict()),
  );
  assert.deepEqual(limitsFromItem(undefined), []);
});

Deno.test("slotFrom() keeps only 'allow' or 'block' for on_unavailable and reads the retention", () => {
  assert.deepEqual(slotFrom(undefined), {
    limits: [],
    onUnavailable: null,
    auditRetentionDays: null,
  });
  const slot = slotFrom({
    "on_unavailable": { S: "allow" },
    "audit_retention_days": { N: "30" },
  });
  assert.equal(slot.onUnavailable, "allow");
  assert.equal(slot.auditRetentionDays, 30);
  assert.equal(
    slotFrom({ "on_unavailable": { S: "maybe" } }).onUnavailable,
    null,
  );
});

Deno.test("bucketTtlPolicy() removes the TTL for entity limits and keeps at least two refresh intervals", () => {
  const limits = [new Limit("rpm", 100, 100, 60)];
  const options = { multiplier: 7, refreshSeconds: 60 };
  assert.equal(
    bucketTtlPolicy({ limits, source: "entity" }, 0, options),
    "remove",
  );
  assert.equal(
    bucketTtlPolicy({ limits, source: "system" }, 0, {
      ...options,
      multiplier: 0,
    }),
    null,
  );
  // time to fill 60 s × 7 = 420 s, above 2 × 60 s.
  assert.equal(
    bucketTtlPolicy({ limits, source: "system" }, 10_000, options),
    430,
  );
  // a short fill time is raised to two refresh intervals.
  const fast = [new Limit("rps", 10, 10, 1)];
  assert.equal(
    bucketTtlPolicy({ limits: fast, source: "resource" }, 0, options),
    120,
  );
});
