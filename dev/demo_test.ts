import assert from "node:assert/strict";
import { demoFailures } from "./demo.ts";

const GOOD = {
  errors: 0,
  admitted: 650,
  rejected: 350,
  exact: true,
  seconds: 4,
};

Deno.test("demoFailures() is empty for a run that admitted, rejected and counted exactly", () => {
  assert.deepEqual(demoFailures(GOOD), []);
});

Deno.test("demoFailures() explains a run that rejected nothing", () => {
  const failures = demoFailures({
    ...GOOD,
    admitted: 1000,
    rejected: 0,
    seconds: 75,
  });
  assert.equal(failures.length, 1);
  assert.match(failures[0] ?? "", /^no acquire was rejected: .*took 75\.0 s/);
});

Deno.test("demoFailures() names every other reason", () => {
  assert.deepEqual(
    demoFailures({
      errors: 2,
      admitted: 0,
      rejected: 5,
      exact: false,
      seconds: 1,
    }),
    [
      "2 acquires failed with an error",
      "no acquire was admitted",
      "the usage snapshots do not match the admitted acquires",
    ],
  );
});
