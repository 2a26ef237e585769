import assert from "node:assert/strict";
import { readItem } from "./_py010_reader.ts";
import { referenceV010Items } from "./integration/_reference_items.ts";

const NONE = { config: [], bucket: [] } as const;

Deno.test("readItem() reads every hand-written 0.10 reference item without an issue", () => {
  const items = referenceV010Items("ns");
  const types = items.map((i) => {
    const r = readItem(i, NONE);
    assert.deepEqual(r.issues, [], JSON.stringify(i));
    return r.type;
  });
  for (
    const t of [
      "bucket",
      "system_config",
      "resource_config",
      "entity_config",
      "entity",
      "audit",
      "usage",
    ]
  ) assert.ok(types.includes(t), t);
  const bucket = items.find((i) => readItem(i, NONE).type === "bucket");
  assert.deepEqual(readItem(bucket ?? {}, NONE).limits["rpm"], {
    cp: 600_000,
    ra: 600_000,
    rp: 60_000,
  });
});

Deno.test("readItem() reports what a 0.10 reader would not read", () => {
  const [system] = referenceV010Items("ns");
  assert.ok(system);
  // A new attribute that is not a declared extension.
  assert.match(
    readItem({ ...system, "l_rpm_sh": { N: "1" } }, NONE).issues.join(),
    /l_rpm_sh is not in the 0.10 layout/,
  );
  assert.deepEqual(
    readItem({ ...system, "l_rpm_sh": { N: "1" } }, {
      config: ["sh"],
      bucket: [],
    }).issues,
    [],
  );
  // A limit whose refill is 0 fails the reference's Limit validation.
  assert.match(
    readItem({ ...system, "l_rpm_ra": { N: "0" } }, NONE).issues.join(),
    /not all positive/,
  );
  // A wrong type.
  assert.match(
    readItem({ ...system, "config_version": { S: "1" } }, NONE).issues.join(),
    /config_version is S/,
  );
});
