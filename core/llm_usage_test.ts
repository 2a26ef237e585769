import assert from "node:assert/strict";
import fc from "fast-check";
import { createTestLimiter } from "../testing.ts";
import { UsageReportError, ValidationError } from "./errors.ts";
import { Limit } from "./limit.ts";
import {
  leaseHolds,
  parseAnthropicUsage,
  parseOpenAIUsage,
  reconcileUsage,
  safeParseOpenAIUsage,
  type TokenUsage,
  usageCharges,
  usageDeltas,
} from "./llm_usage.ts";

const tokens = fc.integer({ min: 0, max: 2_000_000 });

const usageArb: fc.Arbitrary<TokenUsage> = fc.record({
  inputTokens: tokens,
  cachedInputTokens: tokens,
  cacheWriteTokens: tokens,
  outputTokens: tokens,
}).map((u) => ({ ...u }));

const openAIUsageArb = usageArb.map((u) => ({ ...u, cacheWriteTokens: 0 }));

Deno.test("parseOpenAIUsage() reads back the Chat Completions and Responses shapes of any usage", () => {
  fc.assert(
    fc.property(openAIUsageArb, fc.boolean(), (u, details) => {
      const prompt = u.inputTokens + u.cachedInputTokens;
      const chat = {
        "prompt_tokens": prompt,
        "completion_tokens": u.outputTokens,
        "total_tokens": prompt + u.outputTokens,
        ...(details || u.cachedInputTokens > 0
          ? {
            "prompt_tokens_details": {
              "cached_tokens": u.cachedInputTokens,
              "audio_tokens": 0,
            },
          }
          : {}),
      };
      const responses = {
        "input_tokens": prompt,
        "output_tokens": u.outputTokens,
        "total_tokens": prompt + u.outputTokens,
        "input_tokens_details": { "cached_tokens": u.cachedInputTokens },
        "output_tokens_details": { "reasoning_tokens": 0 },
      };
      assert.deepEqual(parseOpenAIUsage(chat), u);
      assert.deepEqual(parseOpenAIUsage(responses), u);
    }),
  );
});

Deno.test("parseAnthropicUsage() reads back any usage, cache fields optional or null", () => {
  fc.assert(
    fc.property(usageArb, fc.boolean(), (u, nulls) => {
      assert.deepEqual(
        parseAnthropicUsage({
          "input_tokens": u.inputTokens,
          "output_tokens": u.outputTokens,
          "cache_read_input_tokens": u.cachedInputTokens,
          "cache_creation_input_tokens": u.cacheWriteTokens,
          "service_tier": "standard",
        }),
        u,
      );
      const bare = { "input_tokens": u.inputTokens, "output_tokens": 7 };
      const withNulls = nulls
        ? {
          ...bare,
          "cache_read_input_tokens": null,
          "cache_creation_input_tokens": null,
        }
        : bare;
      assert.deepEqual(parseAnthropicUsage(withNulls), {
        inputTokens: u.inputTokens,
        cachedInputTokens: 0,
        cacheWriteTokens: 0,
        outputTokens: 7,
      });
    }),
  );
});

Deno.test("parse*Usage() name every missing, negative, fractional or non-number field", () => {
  const cases: [() => unknown, string[]][] = [
    [() => parseOpenAIUsage(null), ["usage"]],
    [() => parseOpenAIUsage([1]), ["usage"]],
    [() => parseOpenAIUsage({ "prompt_tokens": 5 }), [
      "usage.completion_tokens",
    ]],
    [
      () => parseOpenAIUsage({ "prompt_tokens": NaN, "completion_tokens": -1 }),
      [
        "usage.prompt_tokens",
        "usage.completion_tokens",
      ],
    ],
    [
      () =>
        parseOpenAIUsage({
          "prompt_tokens": 10,
          "completion_tokens": 1,
          "prompt_tokens_details": { "cached_tokens": 11 },
        }),
      ["usage.prompt_tokens_details.cached_tokens"],
    ],
    [
      () =>
        parseOpenAIUsage({
          "input_tokens": 10,
          "output_tokens": 1.5,
          "input_tokens_details": "x",
        }),
      ["usage.output_tokens", "usage.input_tokens_details"],
    ],
    [() => parseOpenAIUsage({}), ["usage.input_tokens", "usage.output_tokens"]],
    [
      () =>
        parseAnthropicUsage({
          "input_tokens": "12",
          "output_tokens": 3,
          "cache_read_input_tokens": -4,
          "cache_creation_input_tokens": Infinity,
        }),
      [
        "usage.input_tokens",
        "usage.cache_read_input_tokens",
        "usage.cache_creation_input_tokens",
      ],
    ],
    [() => parseAnthropicUsage({ "output_tokens": 3 }), ["usage.input_tokens"]],
  ];
  for (const [fn, paths] of cases) {
    assert.throws(fn, (e: unknown) => {
      assert.ok(e instanceof UsageReportError, String(e));
      assert.ok(e instanceof ValidationError);
      assert.equal(e.code, "USAGE_INVALID");
      assert.deepEqual(e.issues.map((i) => i.path), paths);
      assert.equal(e.field, paths[0]);
      return true;
    });
  }
  const r = safeParseOpenAIUsage({
    "prompt_tokens": -1,
    "completion_tokens": 0,
  });
  assert.equal(r.ok, false);
});

Deno.test("usageCharges() maps token kinds onto limits and rounds the cost up", () => {
  fc.assert(
    fc.property(
      usageArb,
      fc.boolean(),
      fc.record({
        input: fc.integer({ min: 0, max: 100_000_000 }),
        output: fc.integer({ min: 0, max: 100_000_000 }),
        cachedInput: fc.option(fc.integer({ min: 0, max: 100_000_000 }), {
          nil: undefined,
        }),
        cacheWrite: fc.option(fc.integer({ min: 0, max: 100_000_000 }), {
          nil: undefined,
        }),
      }),
      (u, countCached, p) => {
        const prices = Object.fromEntries(
          Object.entries(p).filter(([, v]) => v !== undefined),
        ) as { input: number; output: number };
        const c = usageCharges(u, {
          limits: { input: "itpm", output: "otpm", total: "tpm", cost: "usd" },
          prices,
          countCachedInput: countCached,
        });
        const input = u.inputTokens + u.cacheWriteTokens +
          (countCached ? u.cachedInputTokens : 0);
        assert.equal(c.itpm, input);
        assert.equal(c.otpm, u.outputTokens);
        assert.equal(c.tpm, input + u.outputTokens);
        const exact = BigInt(u.inputTokens) * BigInt(p.input) +
          BigInt(u.outputTokens) * BigInt(p.output) +
          BigInt(u.cachedInputTokens) * BigInt(p.cachedInput ?? p.input) +
          BigInt(u.cacheWriteTokens) * BigInt(p.cacheWrite ?? p.input);
        const cost = BigInt(c.usd ?? -1);
        assert.ok(cost * 1_000_000n >= exact, "never under-charged");
        assert.ok(
          (cost - 1n) * 1_000_000n < exact || cost === 0n,
          "rounded up by less than one unit",
        );
      },
    ),
  );
});

Deno.test("usageCharges() charges several kinds to one limit when mapped so, and validates prices", () => {
  const u = {
    inputTokens: 10,
    cachedInputTokens: 5,
    cacheWriteTokens: 2,
    outputTokens: 3,
  };
  assert.deepEqual(
    usageCharges(u, { limits: { input: "tpm", output: "tpm" } }),
    { tpm: 15 },
  );
  assert.throws(
    () => usageCharges(u, { limits: { cost: "usd" } }),
    (e: unknown) => e instanceof ValidationError && e.field === "prices",
  );
  assert.throws(
    () =>
      usageCharges(u, {
        limits: { cost: "usd" },
        prices: { input: 1.5, output: 1 },
      }),
    (e: unknown) => e instanceof ValidationError && e.field === "prices.input",
  );
});

Deno.test("usageDeltas() takes the reserved amounts to the actual ones", () => {
  fc.assert(
    fc.property(
      fc.dictionary(fc.constantFrom("a", "b", "c"), tokens),
      fc.dictionary(fc.constantFrom("a", "b", "d"), tokens),
      (actual, reserved) => {
        const d = usageDeltas(actual, reserved);
        assert.deepEqual(Object.keys(d).sort(), Object.keys(actual).sort());
        for (const [n, a] of Object.entries(actual)) {
          assert.equal((reserved[n] ?? 0) + (d[n] ?? 0), a);
        }
      },
    ),
  );
});

Deno.test("reconcileUsage() leaves each mapped limit charged exactly the reported usage, child and cascade parent", async () => {
  await fc.assert(
    fc.asyncProperty(
      usageArb.map((u) => ({
        inputTokens: u.inputTokens % 5000,
        cachedInputTokens: u.cachedInputTokens % 5000,
        cacheWriteTokens: u.cacheWriteTokens % 500,
        outputTokens: u.outputTokens % 5000,
      })),
      fc.record({
        itpm: fc.integer({ min: 0, max: 8000 }),
        otpm: fc.integer({ min: 0, max: 8000 }),
        usd: fc.integer({ min: 0, max: 80_000 }),
      }),
      fc.integer({ min: -500, max: 500 }),
      async (u, estimate, earlier) => {
        const { limiter, source, store } = createTestLimiter();
        source.setSystemDefaults([
          Limit.perMinute("itpm", 1_000_000),
          Limit.perMinute("otpm", 1_000_000),
          Limit.perMinute("usd", 1_000_000),
        ]);
        source.createEntity("org");
        source.createEntity("key", { parentId: "org", cascade: true });
        const lease = await limiter.acquire({
          entityId: "key",
          resource: "llm",
          consume: estimate,
        });
        lease.adjust({ otpm: earlier }); // an adjustment before the report
        const options = {
          limits: { input: "itpm", output: "otpm", cost: "usd" },
          prices: {
            input: 3_000_000,
            output: 15_000_000,
            cachedInput: 300_000,
          },
        };
        const want = usageCharges(u, options);
        reconcileUsage(lease, u, options);
        assert.deepEqual(leaseHolds(lease), want);
        await lease.commit();
        for (const entity of ["key", "org"]) {
          const item = store.get({
            ns: "default",
            entityId: entity,
            resource: "llm",
            shard: 0,
          });
          for (const [n, v] of Object.entries(want)) {
            assert.equal(
              item?.limits.get(n)?.tc,
              BigInt(v) * 1000n,
              `${entity}/${n}`,
            );
          }
        }
      },
    ),
    { numRuns: 40 },
  );
});

Deno.test("reconcileUsage() refuses a limit the lease does not hold, adjusting nothing", async () => {
  const { limiter, source } = createTestLimiter();
  source.setSystemDefaults([Limit.perMinute("tpm", 10_000)]);
  const lease = await limiter.acquire({
    entityId: "k",
    resource: "llm",
    consume: { tpm: 100 },
  });
  assert.throws(
    () =>
      reconcileUsage(
        lease,
        parseOpenAIUsage({
          "prompt_tokens": 1,
          "completion_tokens": 2,
        }),
        { limits: { total: "tpm", output: "otpm" } },
      ),
    ValidationError,
  );
  assert.deepEqual(leaseHolds(lease), { tpm: 100 });
  await lease.rollback();
});
