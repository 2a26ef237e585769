import assert from "node:assert/strict";
import { InvalidNameError, ValidationError } from "./errors.ts";
import { Limit, type LimitDict, LimitName } from "./limit.ts";

function numbers(l: Limit): [number, number, number] {
  return [l.capacity, l.refillAmount, l.refillPeriodSeconds];
}

// ---------------------------------------------------------------------------
// Factories

Deno.test("Limit.perSecond() uses the rate as capacity and a 1 s period", () => {
  const l = Limit.perSecond("rps", 10);
  assert.equal(l.name, "rps");
  assert.deepEqual(numbers(l), [10, 10, 1]);
});

Deno.test("Limit.perMinute() uses the rate as capacity and a 60 s period", () => {
  assert.deepEqual(numbers(Limit.perMinute("rpm", 100)), [100, 100, 60]);
});

Deno.test("Limit.perHour() uses the rate as capacity and a 3600 s period", () => {
  assert.deepEqual(numbers(Limit.perHour("rph", 1000)), [1000, 1000, 3600]);
});

Deno.test("Limit.perDay() uses the rate as capacity and an 86400 s period", () => {
  assert.deepEqual(numbers(Limit.perDay("rpd", 5000)), [5000, 5000, 86_400]);
});

Deno.test("Limit factories use burst as capacity when given", () => {
  assert.deepEqual(numbers(Limit.perSecond("rps", 10, { burst: 25 })), [
    25,
    10,
    1,
  ]);
  assert.deepEqual(numbers(Limit.perMinute("tpm", 10_000, { burst: 15_000 })), [
    15_000,
    10_000,
    60,
  ]);
  assert.deepEqual(numbers(Limit.perHour("rph", 100, { burst: 50 })), [
    50,
    100,
    3600,
  ]);
  assert.deepEqual(numbers(Limit.perDay("rpd", 100, { burst: 1 })), [
    1,
    100,
    86_400,
  ]);
});

Deno.test("Limit factories reject a zero burst instead of falling back to the rate", () => {
  // burst ?? rate: 0 is a given burst, and capacity must be positive.
  assert.throws(() => Limit.perMinute("rpm", 100, { burst: 0 }), {
    name: "ValidationError",
    code: "VALIDATION_FAILED",
    field: "capacity",
  });
});

Deno.test("Limit.custom() takes capacity, refill amount and period as given", () => {
  const l = Limit.custom("tpm", 1000, 10, 60);
  assert.equal(l.name, "tpm");
  assert.deepEqual(numbers(l), [1000, 10, 60]);
});

Deno.test("Limit() and Limit.custom() build equal limits", () => {
  assert.ok(new Limit("x", 3, 2, 7).equals(Limit.custom("x", 3, 2, 7)));
});

// ---------------------------------------------------------------------------
// Validation

Deno.test("Limit() rejects zero or negative capacity", () => {
  for (const capacity of [0, -1, -100]) {
    assert.throws(() => Limit.custom("rpm", capacity, 10, 60), {
      name: "ValidationError",
      code: "VALIDATION_FAILED",
      field: "capacity",
      reason: "capacity must be positive",
    }, String(capacity));
  }
});

Deno.test("Limit() rejects zero or negative refill amount", () => {
  for (const amount of [0, -5]) {
    assert.throws(() => Limit.custom("rpm", 10, amount, 60), {
      name: "ValidationError",
      code: "VALIDATION_FAILED",
      field: "refill_amount",
      reason: /must be positive/,
    }, String(amount));
  }
  assert.throws(() => Limit.perMinute("rpm", 0), {
    name: "ValidationError",
    field: "capacity",
  });
});

Deno.test("Limit() rejects zero or negative refill period", () => {
  for (const period of [0, -60]) {
    assert.throws(() => Limit.custom("rpm", 10, 10, period), {
      name: "ValidationError",
      code: "VALIDATION_FAILED",
      field: "refill_period_seconds",
      reason: /must be positive/,
    }, String(period));
  }
});

Deno.test("Limit() rejects non-integer and non-finite numbers", () => {
  for (const bad of [1.5, NaN, Infinity, 2 ** 53]) {
    assert.throws(() => Limit.custom("rpm", bad, 10, 60), {
      name: "ValidationError",
      field: "capacity",
    }, String(bad));
    assert.throws(() => Limit.custom("rpm", 10, bad, 60), {
      name: "ValidationError",
      field: "refill_amount",
    });
    assert.throws(() => Limit.custom("rpm", 10, 10, bad), {
      name: "ValidationError",
      field: "refill_period_seconds",
    });
  }
});

Deno.test("Limit() rejects an invalid name with InvalidNameError on field name", () => {
  for (
    const name of ["", "wcu", "rpm#evil", "123rpm", "rpm test", "a".repeat(65)]
  ) {
    assert.throws(() => Limit.perMinute(name, 100), {
      name: "InvalidNameError",
      code: "INVALID_NAME",
      field: "name",
    }, name);
  }
});

Deno.test("Limit() validates the name before the numbers", () => {
  assert.throws(() => Limit.custom("", 0, 0, 0), {
    name: "InvalidNameError",
    field: "name",
  });
});

Deno.test("Limit() throws ValidationError subclasses", () => {
  assert.throws(
    () => Limit.custom("wcu", 1, 1, 1),
    (e: unknown) => e instanceof InvalidNameError,
  );
  assert.throws(
    () => Limit.custom("rpm", 0, 1, 1),
    (e: unknown) => e instanceof ValidationError,
  );
});

// ---------------------------------------------------------------------------
// Immutability

Deno.test("Limit() returns a frozen instance", () => {
  const l = Limit.perMinute("rpm", 100);
  assert.ok(Object.isFrozen(l));
});

Deno.test("Limit() fields cannot be reassigned or extended", () => {
  const l = Limit.perMinute("rpm", 100);
  assert.throws(() => {
    (l as { capacity: number }).capacity = 5;
  }, TypeError);
  assert.throws(() => {
    (l as { name: string }).name = "wcu";
  }, TypeError);
  assert.throws(() => {
    (l as unknown as Record<string, unknown>).extra = 1;
  }, TypeError);
  assert.equal(l.capacity, 100);
  assert.equal(l.name, "rpm");
});

// ---------------------------------------------------------------------------
// Derived values and equality

Deno.test("Limit.refillRate is refill amount per second", () => {
  assert.equal(Limit.perMinute("rpm", 120).refillRate, 2);
  assert.equal(Limit.perSecond("rps", 7).refillRate, 7);
  assert.equal(Limit.custom("x", 1, 1, 4).refillRate, 0.25);
});

Deno.test("Limit.equals() compares name and all three numbers", () => {
  const base = Limit.custom("rpm", 100, 100, 60);
  assert.equal(base.equals(Limit.perMinute("rpm", 100)), true);
  assert.equal(base.equals(Limit.custom("tpm", 100, 100, 60)), false);
  assert.equal(base.equals(Limit.custom("rpm", 101, 100, 60)), false);
  assert.equal(base.equals(Limit.custom("rpm", 100, 99, 60)), false);
  assert.equal(base.equals(Limit.custom("rpm", 100, 100, 61)), false);
});

Deno.test("LimitName holds the well-known names", () => {
  assert.deepEqual(LimitName, {
    RPM: "rpm",
    RPH: "rph",
    RPD: "rpd",
    TPM: "tpm",
    TPH: "tph",
    TPD: "tpd",
  });
});

// ---------------------------------------------------------------------------
// toDict / fromDict

Deno.test("Limit.toDict() uses the reference's keys", () => {
  assert.deepEqual(Limit.perMinute("tpm", 10_000, { burst: 15_000 }).toDict(), {
    name: "tpm",
    capacity: 15_000,
    refill_amount: 10_000,
    refill_period_seconds: 60,
  });
});

Deno.test("Limit.fromDict() inverts toDict()", () => {
  const limits = [
    Limit.perSecond("rps", 5),
    Limit.perMinute("tpm", 10_000, { burst: 15_000 }),
    Limit.perDay("rpd", 1),
    Limit.custom("gpt-3.5", 7, 3, 11),
  ];
  for (const l of limits) {
    const back = Limit.fromDict(l.toDict());
    assert.ok(back instanceof Limit);
    assert.ok(back.equals(l), l.name);
    assert.deepEqual(back.toDict(), l.toDict());
  }
});

Deno.test("Limit.fromDict() round-trips through JSON", () => {
  const l = Limit.perHour("rph", 500, { burst: 750 });
  const parsed = JSON.parse(JSON.stringify(l.toDict())) as LimitDict;
  assert.ok(Limit.fromDict(parsed).equals(l));
});

Deno.test("Limit.fromDict() validates like the constructor", () => {
  assert.throws(
    () =>
      Limit.fromDict({
        name: "rpm",
        capacity: 10,
        refill_amount: 0,
        refill_period_seconds: 60,
      }),
    { name: "ValidationError", field: "refill_amount" },
  );
  assert.throws(
    () =>
      Limit.fromDict({
        name: "wcu",
        capacity: 10,
        refill_amount: 10,
        refill_period_seconds: 60,
      }),
    { name: "InvalidNameError", field: "name" },
  );
});
