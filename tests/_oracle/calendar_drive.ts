/**
 * The admission oracle for calendar quotas (issue 14): random histories of
 * acquires (cascade child → parent, and a solo entity), lease adjustments,
 * commits, rollbacks and leases held across window boundaries, with the
 * clock (injected) moved across window ends, DST changes and month ends,
 * run through real limiters and compared step by step with the ideal
 * calendar quota of `ideal.ts`: every verdict equal, every stored balance
 * equal. Every acquire also consumes two shadow limits of capacity 1 (one
 * stored with the flag, one named in `shadow`), which must change no
 * verdict and never be charged (their `tc` stays 0). Two limiters (separate caches, like two processes) take turns, so
 * stale known states and lost conditions are exercised. A rolling limit
 * (never binding) rides along in the same writes.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type BucketItem,
  type CalendarPeriod,
  type CalendarSpec,
  calendarWindow,
  type Lease,
  Limit,
  type RateLimiter,
  RateLimitExceeded,
  RequestExceedsCapacity,
} from "../../mod.ts";
import { calendarBalance } from "../../core/calendar_bucket.ts";
import { idealAdmitAll, IdealCalendarLimit } from "./ideal.ts";

/** One step of a calendar history. */
export type CalendarStep =
  | {
    readonly kind: "acquire";
    readonly who: "child" | "solo";
    readonly usd: number;
    readonly adjust: number;
    readonly end: "commit" | "rollback" | "hold";
  }
  | {
    readonly kind: "release";
    readonly pick: number;
    readonly end: "commit" | "rollback";
  }
  | { readonly kind: "advance"; readonly ms: number }
  | { readonly kind: "boundary"; readonly offset: -1 | 0 | 1 };

/** A calendar history. */
export interface CalendarScenario {
  readonly spec: CalendarSpec;
  readonly start: number;
  readonly caps: {
    readonly child: number;
    readonly parent: number;
    readonly solo: number;
  };
  readonly steps: readonly CalendarStep[];
}

const ZONES = [
  "UTC",
  "Europe/Berlin",
  "America/New_York",
  "America/Santiago",
  "Australia/Lord_Howe",
] as const;

/** Random calendar histories. */
export function calendarScenarioArb(
  maxSteps = 30,
): fc.Arbitrary<CalendarScenario> {
  const step: fc.Arbitrary<CalendarStep> = fc.oneof(
    {
      weight: 5,
      arbitrary: fc.record({
        kind: fc.constant("acquire" as const),
        who: fc.constantFrom("child" as const, "solo" as const),
        usd: fc.integer({ min: 0, max: 9 }),
        adjust: fc.integer({ min: -3, max: 4 }),
        end: fc.constantFrom(
          "commit" as const,
          "rollback" as const,
          "hold" as const,
        ),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant("release" as const),
        pick: fc.nat(),
        end: fc.constantFrom("commit" as const, "rollback" as const),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant("advance" as const),
        ms: fc.constantFrom(1, 60_000, 3_600_000, 86_400_000, 10 * 86_400_000),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant("boundary" as const),
        offset: fc.constantFrom(-1 as const, 0 as const, 1 as const),
      }),
    },
  );
  return fc.record({
    spec: fc.record({
      period: fc.constantFrom<CalendarPeriod>("day", "week", "month"),
      timeZone: fc.constantFrom(...ZONES),
    }),
    start: fc.integer({ min: Date.UTC(2026, 0, 1), max: Date.UTC(2030, 0, 1) }),
    caps: fc.record({
      child: fc.integer({ min: 1, max: 12 }),
      parent: fc.integer({ min: 1, max: 15 }),
      solo: fc.integer({ min: 1, max: 8 }),
    }),
    steps: fc.array(step, { minLength: 5, maxLength: maxSteps }),
  });
}

/** What a run needs from its environment. */
export interface CalendarEnv {
  /** Two or more limiters on the same table or store. */
  readonly limiters: readonly RateLimiter[];
  /** The injected clock of the limiters. */
  readonly clock: { now(): number; set(t: number): void };
  /** Stores the limits of an entity. */
  setLimits(entityId: string, limits: Limit[]): Promise<void> | void;
  /** Creates an entity (with its cascade parent). */
  createEntity(
    entityId: string,
    parentId: string | null,
  ): Promise<void> | void;
  /** The stored bucket item of an entity on resource `api`, or `null`. */
  read(entityId: string): Promise<BucketItem | null> | BucketItem | null;
}

interface Held {
  readonly lease: Lease;
  readonly who: "child" | "solo";
  readonly usd: number;
  readonly adjust: number;
  readonly window: number;
}

/**
 * Runs a history and asserts each verdict and each stored balance against
 * the ideal. Returns counts for the caller's coverage checks.
 */
export async function driveCalendar(
  sc: CalendarScenario,
  env: CalendarEnv,
): Promise<{ admitted: number; refused: number; resets: number }> {
  env.clock.set(sc.start);
  const window = (t: number) => calendarWindow(t, sc.spec);
  const ideal = {
    child: new IdealCalendarLimit(BigInt(sc.caps.child) * 1000n, window),
    parent: new IdealCalendarLimit(BigInt(sc.caps.parent) * 1000n, window),
    solo: new IdealCalendarLimit(BigInt(sc.caps.solo) * 1000n, window),
  };
  const rpm = Limit.perMinute("rpm", 1_000_000);
  // Shadow limits ride along (stored flag and per call), capacity 1: they
  // must never change a verdict and never be charged.
  const shadowed = [
    Limit.perHour("spm", 1).withShadow(),
    Limit.perHour("tpm", 1),
  ];
  const usd = (n: number) =>
    Limit.perCalendar("usd", n, {
      period: sc.spec.period,
      timeZone: sc.spec.timeZone,
    });
  await env.createEntity("parent", null);
  await env.createEntity("child", "parent");
  await env.createEntity("solo", null);
  await env.setLimits("parent", [rpm, usd(sc.caps.parent), ...shadowed]);
  await env.setLimits("child", [rpm, usd(sc.caps.child), ...shadowed]);
  await env.setLimits("solo", [rpm, usd(sc.caps.solo), ...shadowed]);
  const held: Held[] = [];
  let admitted = 0;
  let refused = 0;
  let resets = 0;
  let lastWindow = window(sc.start).start;
  const sides = (who: "child" | "solo") =>
    who === "child" ? ["child", "parent"] as const : ["solo"] as const;
  const end = async (h: Held, how: "commit" | "rollback") => {
    const t = env.clock.now();
    if (how === "commit") {
      await h.lease.adjust({ usd: h.adjust, spm: 3, tpm: 3 }); // shadow: ignored
      await h.lease.commit();
      for (const s of sides(h.who)) {
        ideal[s].delta(t, h.window, BigInt(h.adjust) * 1000n);
      }
    } else {
      if (h.adjust !== 0) await h.lease.adjust({ usd: h.adjust });
      await h.lease.rollback();
      for (const s of sides(h.who)) {
        ideal[s].delta(t, h.window, -BigInt(h.usd) * 1000n);
      }
    }
  };
  for (const [i, step] of sc.steps.entries()) {
    const t0 = env.clock.now();
    const where = `step ${i} ${JSON.stringify(step)} at ${
      new Date(t0).toISOString()
    }`;
    switch (step.kind) {
      case "advance":
        env.clock.set(t0 + step.ms);
        break;
      case "boundary":
        env.clock.set(window(t0).end + step.offset);
        break;
      case "release": {
        if (held.length === 0) break;
        const [h] = held.splice(step.pick % held.length, 1);
        if (h) await end(h, step.end);
        break;
      }
      case "acquire": {
        const limiter = env.limiters[i % env.limiters.length] as RateLimiter;
        const t = env.clock.now();
        const amount = BigInt(step.usd) * 1000n;
        const expect = idealAdmitAll(
          t,
          sides(step.who).map((s) => ({ limit: ideal[s], amount })),
        );
        let lease: Lease | null = null;
        try {
          lease = await limiter.acquire({
            entityId: step.who,
            resource: "api",
            consume: { rpm: 1, usd: step.usd, spm: 2, tpm: 2 },
            shadow: ["tpm"],
          });
        } catch (e) {
          if (
            !(e instanceof RateLimitExceeded ||
              e instanceof RequestExceedsCapacity)
          ) throw e;
        }
        assert.equal(lease !== null, expect, `${where}: verdict`);
        if (!lease) {
          refused++;
          break;
        }
        admitted++;
        const h: Held = {
          lease,
          who: step.who,
          usd: step.usd,
          adjust: step.adjust,
          window: window(t).start,
        };
        if (step.end === "hold") held.push(h);
        else await end(h, step.end);
        break;
      }
    }
    const now = env.clock.now();
    if (window(now).start !== lastWindow) {
      resets++;
      lastWindow = window(now).start;
    }
    for (const s of ["child", "parent", "solo"] as const) {
      const item = await env.read(s);
      const st = item?.limits.get("usd");
      const cp = ideal[s].capacity;
      const stored = st ? calendarBalance(st, sc.spec, now, cp).tk : cp;
      assert.equal(stored, ideal[s].balance(now), `${where}: ${s} balance`);
      for (const name of ["spm", "tpm"]) {
        const tc = item?.limits.get(name)?.tc ?? 0n;
        assert.equal(tc, 0n, `${where}: shadow ${s}/${name} charged`);
      }
    }
  }
  for (const h of held) await h.lease.rollback().catch(() => {});
  return { admitted, refused, resets };
}
