import assert from "node:assert/strict";
import { Expr, updateExpression } from "./expr.ts";

Deno.test("Expr.n() sends names with an underscore and rf as they are, aliases reserved words once", () => {
  const e = new Expr();
  assert.equal(e.n("b_rpm_tk"), "b_rpm_tk");
  assert.equal(e.n("rf"), "rf");
  const ttl = e.n("ttl");
  assert.equal(ttl, "#n0");
  assert.equal(e.n("ttl"), ttl);
  assert.equal(e.n("cascade"), "#n1");
  assert.deepEqual(e.attrs().ExpressionAttributeNames, {
    "#n0": "ttl",
    "#n1": "cascade",
  });
});

Deno.test("Expr.attrs() omits the names map when every name is plain", () => {
  const e = new Expr();
  e.n("b_rpm_tk");
  e.n("rf");
  e.num(1n);
  assert.equal(e.attrs().ExpressionAttributeNames, undefined);
  assert.deepEqual(e.attrs().ExpressionAttributeValues, { ":v0": { N: "1" } });
});

Deno.test("Expr.num() and str() reuse a placeholder for an equal value, not across kinds", () => {
  const e = new Expr();
  const a = e.num(1000n);
  assert.equal(e.num(1000n), a);
  const b = e.num(-1000n);
  assert.notEqual(b, a);
  const s = e.str("1000");
  assert.notEqual(s, a);
  assert.equal(e.str("1000"), s);
  assert.deepEqual(e.values, {
    [a]: { N: "1000" },
    [b]: { N: "-1000" },
    [s]: { S: "1000" },
  });
});

Deno.test("Expr.v() numbers placeholders past the precomputed ones", () => {
  const e = new Expr();
  const ps = Array.from({ length: 40 }, (_, i) => e.num(i));
  assert.deepEqual(ps, Array.from({ length: 40 }, (_, i) => `:v${i}`));
  assert.equal(Object.keys(e.values).length, 40);
});

Deno.test("updateExpression() skips empty clauses", () => {
  assert.equal(
    updateExpression({ set: ["a = :v0"], add: [], remove: ["b"] }),
    "SET a = :v0 REMOVE b",
  );
});
