import assert from "node:assert/strict";
import { BoundedMap } from "./_bounded_map.ts";

Deno.test("BoundedMap.set() evicts the oldest entry when a new key arrives at the bound", () => {
  const m = new BoundedMap<string, number>(3);
  for (const [i, k] of ["a", "b", "c", "d", "e"].entries()) m.set(k, i);
  assert.deepEqual([...m.keys()], ["c", "d", "e"]);
  assert.equal(m.size, 3);
});

Deno.test("BoundedMap.set() renews a present key by default and keeps its place when told", () => {
  const renewing = new BoundedMap<string, number>(2);
  renewing.set("a", 1).set("b", 2).set("a", 3).set("c", 4);
  assert.deepEqual([...renewing], [["a", 3], ["c", 4]]);

  const fifo = new BoundedMap<string, number>(2, { renewOnSet: false });
  fifo.set("a", 1).set("b", 2).set("a", 3).set("c", 4);
  assert.deepEqual([...fifo], [["b", 2], ["c", 4]]);
});

Deno.test("BoundedMap.set() of a present key at the bound evicts nothing", () => {
  const m = new BoundedMap<string, number>(2, { renewOnSet: false });
  m.set("a", 1).set("b", 2).set("b", 3);
  assert.deepEqual([...m], [["a", 1], ["b", 3]]);
});

Deno.test("BoundedMap keeps the last entry when maxSize is below 1", () => {
  const m = new BoundedMap<string, number>(0);
  m.set("a", 1).set("b", 2);
  assert.deepEqual([...m], [["b", 2]]);
  assert.ok(m instanceof Map);
});
