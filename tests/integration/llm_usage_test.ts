/**
 * Token accounting for LLM gateways on DynamoDB Local: a provider's usage
 * report reconciled onto a cascade key's lease (several limits, a cost
 * limit), a metered stream stopped at its budget, and a rollback after a
 * metered stream. Every test checks the stored consumed counters
 * (`b_<name>_tc`, millitokens) of the entity and its parent.
 */
import assert from "node:assert/strict";
import {
  Limit,
  meterStream,
  parseAnthropicUsage,
  parseOpenAIUsage,
  RateLimiter,
  reconcileUsage,
  StreamBudgetExceeded,
  usageCharges,
} from "../../mod.ts";
import { freshRepo, manualClock } from "./_harness.ts";
import { num, rawBucket } from "./_stored.ts";

const START = Date.UTC(2030, 0, 15, 12, 0, 0);

async function cascadeEnv() {
  const clock = manualClock(START);
  const env = await freshRepo({ clock });
  await env.repo.setSystemDefaults([
    Limit.perMinute("itpm", 100_000),
    Limit.perMinute("otpm", 20_000),
    Limit.perDay("usd_micros", 10_000_000),
  ]);
  await env.repo.createEntity("team");
  await env.repo.createEntity("key", { parentId: "team", cascade: true });
  return env;
}

async function stored(
  env: Awaited<ReturnType<typeof cascadeEnv>>,
  entity: string,
): Promise<Record<string, number>> {
  const item = await rawBucket(env.client, env.repo, entity, "llm");
  return Object.fromEntries(
    ["itpm", "otpm", "usd_micros"].map((n) => [n, num(item, `b_${n}_tc`)]),
  );
}

Deno.test("reconcileUsage() leaves the entity and its cascade parent charged exactly the reported usage, on every mapped limit", async () => {
  await using env = await cascadeEnv();
  const limiter = new RateLimiter(env.repo);
  const accounting = {
    limits: { input: "itpm", output: "otpm", cost: "usd_micros" },
    prices: { input: 2_500_000, cachedInput: 1_250_000, output: 10_000_000 },
    countCachedInput: true,
  };
  // OpenAI Responses shape.
  const usage = parseOpenAIUsage({
    "input_tokens": 3_000,
    "output_tokens": 420,
    "total_tokens": 3_420,
    "input_tokens_details": { "cached_tokens": 2_048 },
  });
  const deltas = await limiter.acquire({
    entityId: "key",
    resource: "llm",
    consume: { itpm: 3_000, otpm: 4_000, usd_micros: 50_000 },
    min: { otpm: 500 },
  }, (lease) => reconcileUsage(lease, usage, accounting));
  const want = usageCharges(usage, accounting);
  // 952 × 2.5 + 2048 × 1.25 + 420 × 10 = 9140 micro-dollars.
  assert.deepEqual(want, { itpm: 3_000, otpm: 420, usd_micros: 9_140 });
  assert.deepEqual(deltas, { itpm: 0, otpm: -3_580, usd_micros: -40_860 });
  const scale = (o: Record<string, number>) =>
    Object.fromEntries(Object.entries(o).map(([k, v]) => [k, v * 1000]));
  assert.deepEqual(await stored(env, "key"), scale(want));
  assert.deepEqual(await stored(env, "team"), scale(want));

  // Anthropic: cache reads are not input (countCachedInput false).
  const a = parseAnthropicUsage({
    "input_tokens": 10,
    "output_tokens": 90,
    "cache_read_input_tokens": 5_000,
    "cache_creation_input_tokens": 100,
  });
  await limiter.acquire({
    entityId: "key",
    resource: "llm",
    consume: { itpm: 6_000, otpm: 1_000, usd_micros: 1 },
  }, (lease) => {
    reconcileUsage(lease, a, { ...accounting, countCachedInput: false });
  });
  const second = usageCharges(a, { ...accounting, countCachedInput: false });
  assert.equal(second.itpm, 110);
  assert.deepEqual(
    await stored(env, "team"),
    scale({
      itpm: want.itpm + 110,
      otpm: (want.otpm ?? 0) + 90,
      usd_micros: (want.usd_micros ?? 0) + (second.usd_micros ?? 0),
    }),
  );
});

Deno.test("meterStream() stops a stream at its budget and the commit charges what the provider produced, child and parent", async () => {
  await using env = await cascadeEnv();
  const limiter = new RateLimiter(env.repo);
  const controller = new AbortController();
  let produced = 0;
  async function* provider(): AsyncGenerator<number> {
    while (!controller.signal.aborted) {
      produced += 40;
      yield 40;
    }
  }
  const passed: number[] = [];
  await assert.rejects(
    limiter.acquire({
      entityId: "key",
      resource: "llm",
      consume: { itpm: 100, otpm: 300 },
    }, async (lease) => {
      for await (
        const c of meterStream(lease, provider(), {
          count: (n) => ({ otpm: n }),
          controller,
        })
      ) passed.push(c);
    }),
    (e: unknown) =>
      e instanceof StreamBudgetExceeded && e.used === 320 && e.budget === 300,
  );
  // The body threw, so the lease rolled back: nothing stays charged.
  assert.equal(passed.length, 7);
  assert.equal(produced, 320);
  assert.deepEqual(await stored(env, "key"), {
    itpm: 0,
    otpm: 0,
    usd_micros: 0,
  });

  // Caught inside the body: the partial answer is served and charged.
  await limiter.acquire({
    entityId: "key",
    resource: "llm",
    consume: { itpm: 100, otpm: 300 },
  }, async (lease) => {
    const c2 = new AbortController();
    async function* again(): AsyncGenerator<number> {
      while (!c2.signal.aborted) yield 40;
    }
    try {
      for await (
        const _ of meterStream(lease, again(), {
          count: (n) => ({ otpm: n }),
          controller: c2,
        })
      ) { /* serve the chunk */ }
    } catch (e) {
      if (!(e instanceof StreamBudgetExceeded)) throw e;
    }
  });
  for (const entity of ["key", "team"]) {
    assert.deepEqual(await stored(env, entity), {
      itpm: 100_000,
      otpm: 320_000,
      usd_micros: 0,
    });
  }
});

Deno.test("meterStream() gives the unused reservation back when the stream ends early", async () => {
  await using env = await cascadeEnv();
  const limiter = new RateLimiter(env.repo);
  const lease = await limiter.acquire({
    entityId: "key",
    resource: "llm",
    consume: { itpm: 50, otpm: 2_000 },
  });
  async function* shortAnswer(): AsyncGenerator<string> {
    yield "Yes.";
  }
  for await (
    const _ of meterStream(lease, shortAnswer(), {
      count: () => ({ otpm: 2 }),
    })
  ) { /* serve */ }
  await lease.commit();
  for (const entity of ["key", "team"]) {
    const item = await rawBucket(env.client, env.repo, entity, "llm");
    assert.equal(num(item, "b_otpm_tc"), 2_000);
    // 20000 capacity − 2 tokens (the clock is frozen: no refill).
    assert.equal(num(item, "b_otpm_tk"), 19_998_000);
  }
});
