import assert from "node:assert/strict";
import { createUlid } from "./ulid.ts";

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const ULID_PATTERN = /^[0-9A-HJKMNP-TV-Z]{26}$/;

function decodeTime(id: string): number {
  let t = 0;
  for (const ch of id.slice(0, 10)) {
    const v = CROCKFORD.indexOf(ch);
    assert.ok(v >= 0, `not Crockford base32: ${ch}`);
    t = t * 32 + v;
  }
  return t;
}

function fill(byte: number): (bytes: Uint8Array) => void {
  return function random(bytes: Uint8Array): void {
    bytes.fill(byte);
  };
}

function assertStrictlyIncreasing(ids: readonly string[]): void {
  for (let i = 1; i < ids.length; i++) {
    const prev = ids[i - 1] as string;
    const cur = ids[i] as string;
    assert.ok(
      prev < cur,
      `id ${i} (${cur}) is not greater than id ${i - 1} (${prev})`,
    );
  }
}

Deno.test("createUlid() ids are 26 Crockford base32 characters", () => {
  const ulid = createUlid();
  for (let i = 0; i < 1000; i++) {
    const id = ulid(1_700_000_000_000 + i * 7);
    assert.equal(id.length, 26);
    assert.match(id, ULID_PATTERN);
  }
});

Deno.test("createUlid() encodes the millisecond timestamp in the first 10 characters", () => {
  // Example from the ULID specification.
  assert.equal(
    createUlid(fill(0))(1_469_918_176_385).slice(0, 10),
    "01ARYZ6S41",
  );
  const ulid = createUlid();
  for (const ms of [0, 1, 31, 32, 1_700_000_000_000, 2 ** 48 - 1]) {
    assert.equal(decodeTime(createUlid()(ms)), ms, String(ms));
  }
  assert.equal(decodeTime(ulid(1_705_329_000_123)), 1_705_329_000_123);
});

Deno.test("createUlid() encodes the 80 random bits in the last 16 characters", () => {
  assert.equal(createUlid(fill(0))(0), "0".repeat(26));
  assert.equal(createUlid(fill(0xff))(0), "0".repeat(10) + "Z".repeat(16));
  // 0x01 repeated: 80 bits 0000_0001 × 10 → base32 groups of 5 bits.
  const bits = "00000001".repeat(10);
  let expected = "";
  for (let i = 0; i < 80; i += 5) {
    expected += CROCKFORD[parseInt(bits.slice(i, i + 5), 2)];
  }
  assert.equal(createUlid(fill(1))(0).slice(10), expected);
});

Deno.test("createUlid() draws fresh randomness for each new millisecond", () => {
  let calls = 0;
  const ulid = createUlid((bytes) => {
    calls++;
    bytes.fill(calls);
  });
  ulid(100);
  ulid(100);
  ulid(101);
  assert.equal(calls, 2);
});

Deno.test("createUlid() increments the random part within one millisecond", () => {
  const ulid = createUlid(fill(0));
  assert.equal(ulid(5).slice(10), "0000000000000000");
  assert.equal(ulid(5).slice(10), "0000000000000001");
  assert.equal(ulid(5).slice(10), "0000000000000002");
});

Deno.test("createUlid() ids strictly increase for 10,000 ids in the same millisecond", () => {
  const ulid = createUlid();
  const ids = Array.from({ length: 10_000 }, () => ulid(1_700_000_000_000));
  assertStrictlyIncreasing(ids);
  assert.equal(new Set(ids).size, ids.length);
  for (const id of ids) assert.equal(decodeTime(id), 1_700_000_000_000);
});

Deno.test("createUlid() ids strictly increase for 10,000 ids across milliseconds", () => {
  const ulid = createUlid();
  const ids: string[] = [];
  let now = 1_700_000_000_000;
  for (let i = 0; i < 10_000; i++) {
    if (i % 3 === 0) now += 1 + (i % 5);
    ids.push(ulid(now));
  }
  assertStrictlyIncreasing(ids);
});

Deno.test("createUlid() ids keep increasing when the clock goes backwards", () => {
  const ulid = createUlid();
  const ids = [ulid(1_700_000_001_000)];
  for (let i = 0; i < 10_000; i++) ids.push(ulid(1_700_000_000_000 - i));
  ids.push(ulid(1_700_000_000_500));
  assertStrictlyIncreasing(ids);
  // The timestamp stays at the latest time seen.
  for (const id of ids) assert.equal(decodeTime(id), 1_700_000_001_000);
  // Once the clock passes the latest time again, ids carry the new time.
  const later = ulid(1_700_000_002_000);
  assert.equal(decodeTime(later), 1_700_000_002_000);
  assert.ok((ids[ids.length - 1] as string) < later);
});

Deno.test("createUlid() ids keep increasing when the random part overflows within a millisecond", () => {
  const ulid = createUlid(fill(0xff));
  const ids = [ulid(1000), ulid(1000), ulid(1000), ulid(1001)];
  assertStrictlyIncreasing(ids);
});

Deno.test("createUlid() generators are independent", () => {
  const a = createUlid(fill(0));
  const b = createUlid(fill(0));
  a(10);
  a(10);
  assert.equal(b(10), "000000000A" + "0".repeat(16));
});

Deno.test("createUlid() uses crypto randomness by default", () => {
  // Two generators agreeing on 80 random bits has probability 2^-80.
  assert.notEqual(createUlid()(42).slice(10), createUlid()(42).slice(10));
});
