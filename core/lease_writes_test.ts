import assert from "node:assert/strict";
import { Limit, RateLimiterUnavailable, type StrandedCharge } from "../mod.ts";
import { createTestLimiter } from "../testing.ts";
import { answerAfterDeadline } from "../tests/_fakes/late_answer.ts";
import type { BucketWrite } from "./acquire/bucket_store.ts";
import {
  currentLateSink,
  currentSignal,
  type LateOutcome,
} from "./transport.ts";

/** The answer of a write is held this long (it applied, or not, at once). */
const HOLD_MS = 150;
/** The caller's deadline: passes while an answer is held. */
const DEADLINE_MS = 30;

/**
 * What the transport does for a write whose answer is held past its
 * caller's deadline (`sendWrite`): the caller gets the deadline's reason at
 * once, and the late-outcome sink learns how the write ended once it does.
 */
async function holdAnswer(outcome: LateOutcome, ms: number): Promise<void> {
  const signal = currentSignal();
  const sink = currentLateSink();
  const held = new Promise<void>((r) => setTimeout(r, ms));
  if (!signal) return await held;
  await new Promise<void>((resolve, reject) => {
    const onAbort = (): void => {
      sink?.(held.then(() => outcome));
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
    held.then(() => {
      signal.removeEventListener("abort", onAbort);
      if (outcome === "applied") resolve();
      else {reject(
          Object.assign(new Error("throttled"), {
            name: "ThrottlingException",
          }),
        );}
    });
  });
}

function setup(
  { coalesceWrites = true, timeoutMs }: {
    coalesceWrites?: boolean;
    timeoutMs?: number;
  } = {},
) {
  const stranded: StrandedCharge[] = [];
  /** The next write held: `after` it applied, or `before` (not applied). */
  let hold:
    | { phase: "before" | "after"; outcome: LateOutcome; ms: number }
    | null = null;
  const writes: BucketWrite[] = [];
  const t = createTestLimiter({
    store: {
      hook: async (phase, op, ws) => {
        if (op !== "write") return;
        if (phase === "after") writes.push(...ws); // the first acquire is a transaction
        const h = hold;
        if (h && h.phase === phase) {
          hold = null;
          await holdAnswer(h.outcome, h.ms);
        }
      },
    },
    limiter: {
      onError: () => {},
      onStranded: (s) => stranded.push(s),
      coalesceWrites,
      ...(timeoutMs ? { timeoutMs } : {}),
    },
  });
  t.source.setSystemDefaults([Limit.perMinute("rpm", 1000)]);
  const tc = () =>
    t.store.get({ ns: "default", entityId: "k", resource: "api", shard: 0 })
      ?.limits.get("rpm")?.tc;
  return {
    ...t,
    stranded,
    writes,
    tc,
    holdNext: (
      phase: "before" | "after",
      outcome: LateOutcome,
      ms = HOLD_MS,
    ) => void (hold = { phase, outcome, ms }),
  };
}

const req = { entityId: "k", resource: "api", consume: { rpm: 10 } };

Deno.test("Lease.consume() whose charge applies after its deadline gives it back: nothing stranded, the bucket holds what the caller was told", async () => {
  const t = setup();
  const lease = await t.limiter.acquire(req);
  t.holdNext("after", "applied");
  await assert.rejects(
    lease.consume({ rpm: 5 }, { timeoutMs: DEADLINE_MS }),
    RateLimiterUnavailable,
  );
  await lease.commit();
  await t.limiter.close(); // waits for the late charge and its give-back
  assert.deepEqual(t.stranded, []);
  assert.equal(t.tc(), 10_000n, "the acquire's 10; the late 5 given back");
  assert.equal(t.writes.length, 2, "the late consume and its give-back");
});

Deno.test("Lease.consume() whose charge certainly did not apply after its deadline reports nothing", async () => {
  const t = setup();
  const lease = await t.limiter.acquire(req);
  t.holdNext("before", "notApplied");
  await assert.rejects(
    lease.consume({ rpm: 5 }, { timeoutMs: DEADLINE_MS }),
    RateLimiterUnavailable,
  );
  await lease.commit();
  await t.limiter.close();
  assert.deepEqual(t.stranded, []);
  assert.equal(t.tc(), 10_000n);
});

Deno.test("Lease.consume() whose charge's late outcome is unknown reports it stranded (debit)", async () => {
  const t = setup();
  const lease = await t.limiter.acquire(req);
  t.holdNext("after", "unknown");
  await assert.rejects(lease.consume({ rpm: 5 }, { timeoutMs: DEADLINE_MS }));
  await lease.commit();
  await t.limiter.close();
  assert.deepEqual(
    t.stranded.map((s) => [s.kind, s.amounts]),
    [["debit", { rpm: 5 }]],
  );
  assert.equal(t.tc(), 15_000n, "it did apply: the report accounts for it");
});

for (const coalesce of [true, false]) {
  Deno.test(`Lease.commit() retried while its first write is held past the deadline writes the adjustment once (coalesceWrites: ${coalesce})`, async () => {
    const t = setup({ coalesceWrites: coalesce });
    const lease = await t.limiter.acquire(req);
    lease.adjust({ rpm: 5 });
    t.holdNext("after", "applied");
    await assert.rejects(
      lease.commit({ timeoutMs: DEADLINE_MS }),
      RateLimiterUnavailable,
    );
    assert.equal(lease.state, "open");
    // The retry comes while the first write is still held: it waits for its outcome.
    await lease.commit();
    assert.equal(lease.state, "committed");
    await t.limiter.close();
    assert.deepEqual(t.stranded, []);
    assert.equal(t.tc(), 15_000n, "10 acquired + 5 adjusted, once");
    assert.equal(t.writes.length, 1, "one commit write");
  });
}

Deno.test("Lease.commit() retried after its held first write did not apply writes the adjustment then, once", async () => {
  const t = setup();
  const lease = await t.limiter.acquire(req);
  lease.adjust({ rpm: 5 });
  t.holdNext("before", "notApplied");
  await assert.rejects(lease.commit({ timeoutMs: DEADLINE_MS }));
  await lease.commit();
  await t.limiter.close();
  assert.deepEqual(t.stranded, []);
  assert.equal(t.tc(), 15_000n);
});

Deno.test("Lease.commit() retried after its first write's late outcome is unknown reports the debit and writes it again, as before", async () => {
  const t = setup();
  const lease = await t.limiter.acquire(req);
  lease.adjust({ rpm: 5 });
  t.holdNext("after", "unknown");
  await assert.rejects(lease.commit({ timeoutMs: DEADLINE_MS }));
  await lease.commit();
  await t.limiter.close();
  assert.deepEqual(
    t.stranded.map((s) => [s.kind, s.amounts]),
    [["debit", { rpm: 5 }]],
  );
  assert.equal(t.tc(), 20_000n, "taken twice, one of them reported");
});

Deno.test("Lease.rollback() whose give-back applies after its deadline is not reported and not sent again", async () => {
  const t = setup();
  const lease = await t.limiter.acquire(req);
  t.holdNext("after", "applied");
  await assert.rejects(lease.rollback({ timeoutMs: DEADLINE_MS }));
  await lease.rollback();
  assert.equal(lease.state, "rolled_back");
  await t.limiter.close();
  assert.deepEqual(t.stranded, []);
  assert.equal(t.tc(), 0n);
  assert.equal(t.writes.length, 1, "one give-back");
});

Deno.test("Lease.rollback() whose held give-back did not apply sends it again", async () => {
  const t = setup();
  const lease = await t.limiter.acquire(req);
  t.holdNext("before", "notApplied");
  await assert.rejects(lease.rollback({ timeoutMs: DEADLINE_MS }));
  await lease.rollback();
  await t.limiter.close();
  assert.deepEqual(t.stranded, []);
  assert.equal(t.tc(), 0n);
});

Deno.test("Lease.rollback() after a commit still held past its deadline gives back the committed amounts too", async () => {
  const t = setup();
  const lease = await t.limiter.acquire(req);
  lease.adjust({ rpm: 5 });
  t.holdNext("after", "applied");
  await assert.rejects(lease.commit({ timeoutMs: DEADLINE_MS }));
  await lease.rollback(); // waits for the commit's outcome, then gives back 15
  await t.limiter.close();
  assert.deepEqual(t.stranded, []);
  assert.equal(t.tc(), 0n);
});

Deno.test("a callback's failed rollback reports nothing when its give-back applied late, once that is known", async () => {
  // The rollback runs under the limiter's deadline: 300 ms, its answer held 800.
  const t = setup({ timeoutMs: 300 });
  await assert.rejects(
    t.limiter.acquire(req, () => {
      t.holdNext("after", "applied", 800);
      throw new Error("body failed");
    }),
    /body failed/,
  );
  assert.deepEqual(t.stranded, [], "not reported while its outcome is pending");
  await t.limiter.close();
  assert.deepEqual(t.stranded, []);
  assert.equal(t.tc(), 0n);
});

Deno.test("a callback's failed rollback whose give-back did not apply reports it once known", async () => {
  const t = setup({ timeoutMs: 300 });
  await assert.rejects(
    t.limiter.acquire(req, () => {
      t.holdNext("before", "notApplied", 800);
      throw new Error("body failed");
    }),
    /body failed/,
  );
  await t.limiter.close();
  assert.deepEqual(
    t.stranded.map((s) => [s.kind, s.amounts]),
    [["giveback", { rpm: 10 }]],
  );
  assert.equal(t.tc(), 10_000n, "the reported give-back stands");
});

Deno.test("Lease.commit() whose read of a forgotten item outlives its deadline reports nothing stranded (no write was sent) and the retried commit writes the delta once", async () => {
  const stranded: StrandedCharge[] = [];
  let holdRead = false;
  let failWrite = false;
  const t = createTestLimiter({
    store: {
      hook: async (phase, op) => {
        if (phase !== "before") return;
        if (op === "read" && holdRead) {
          holdRead = false;
          // A read is aborted at its caller's deadline (the transport does so).
          const signal = currentSignal();
          await new Promise<void>((resolve, reject) => {
            const timer = setTimeout(resolve, HOLD_MS);
            signal?.addEventListener("abort", () => {
              clearTimeout(timer);
              reject(signal.reason);
            }, { once: true });
          });
        }
        if (op === "write" && failWrite) {
          failWrite = false;
          // An ambiguous failure: the writer forgets the item.
          throw Object.assign(new Error("reset"), { name: "ECONNRESET" });
        }
      },
    },
    limiter: {
      onError: () => {},
      onStranded: (s) => stranded.push(s),
      coalesceWrites: false,
    },
  });
  t.source.setSystemDefaults([Limit.perMinute("rpm", 1000)]);
  const tc = () =>
    t.store.get({ ns: "default", entityId: "k", resource: "api", shard: 0 })
      ?.limits.get("rpm")?.tc;
  const lease = await t.limiter.acquire(req);
  failWrite = true;
  await assert.rejects(lease.consume({ rpm: 1 }), RateLimiterUnavailable);
  assert.equal(stranded.length, 1, "the ambiguous consume is reported");
  lease.adjust({ rpm: 5 });
  holdRead = true;
  await assert.rejects(
    lease.commit({ timeoutMs: DEADLINE_MS }),
    RateLimiterUnavailable,
  );
  assert.equal(
    stranded.length,
    1,
    "a commit that sent nothing is not reported",
  );
  assert.equal(lease.state, "open");
  await lease.commit();
  await t.limiter.close();
  assert.equal(tc(), 15_000n, "the acquire's 10 and the adjustment's 5, once");
});

Deno.test("Lease.commit() whose delta lost every race and whose debt write applied after its deadline reports the give-back it could not place", async () => {
  const stranded: StrandedCharge[] = [];
  const ref = { ns: "default", entityId: "k", resource: "api", shard: 0 };
  let racing = false;
  const writes: string[] = [];
  const t = createTestLimiter({
    store: {
      hook: async (phase, op, ws) => {
        if (op !== "write" || !racing) return;
        const kind = ws[0]?.kind as string;
        if (phase === "after") {
          if (kind === "debt") await answerAfterDeadline();
          return;
        }
        writes.push(kind);
        if (kind === "debt") return;
        // Another writer moved the item's refill time first: the condition fails.
        const raw = t.store.raw(ref);
        assert.ok(raw);
        raw["rf"] = { N: String(BigInt((raw["rf"] as { N: string }).N) - 1n) };
        t.store.putRaw(ref, raw);
      },
    },
    limiter: {
      onError: () => {},
      onStranded: (s) => stranded.push(s),
      coalesceWrites: false,
    },
  });
  t.source.setSystemDefaults([
    Limit.perMinute("rpm", 1000),
    Limit.perMinute("tpm", 1000),
  ]);
  const tc = (name: string) => t.store.get(ref)?.limits.get(name)?.tc;
  const lease = await t.limiter.acquire({
    entityId: "k",
    resource: "api",
    consume: { rpm: 10, tpm: 10 },
  });
  lease.adjust({ rpm: 5, tpm: -4 });
  racing = true;
  // The debt write is held until the deadline passed, however long the races took.
  await assert.rejects(
    lease.commit({ timeoutMs: 300 }),
    RateLimiterUnavailable,
  );
  racing = false;
  assert.equal(writes.length, 17, `16 lost races, then the debt: ${writes}`);
  assert.equal(writes.at(-1), "debt");
  await t.limiter.close(); // the late outcome of the debt write
  // It took the 5 and placed none of the 4 given back: they are reported.
  assert.deepEqual(
    stranded.map((s) => [s.kind, s.amounts]),
    [["giveback", { "*": 4 }]],
  );
  assert.equal(tc("rpm"), 15_000n);
  assert.equal(tc("tpm"), 10_000n, "the give-back was not placed");
  // The delta applied late: a retried commit sends nothing.
  await lease.commit();
  assert.equal(writes.length, 17, "nothing left to send");
  assert.equal(stranded.length, 1);
});

Deno.test("Lease.consume() waits for the give-back of a group that stood, when another was refused, at most the compensation grace (1 s) and then leaves it to the background", async () => {
  // The 30-minute soak at 6bd4199 saw a consume answer 1.8 s after its
  // deadline: its give-back (throttled, then in conflict) had the lease's
  // whole timeoutMs as grace, where an acquire's compensation has 1 s.
  const stranded: StrandedCharge[] = [];
  let armed = false;
  let childWrites = 0;
  const onChild = (w: BucketWrite): boolean =>
    w.kind === "plain"
      ? w.write.ref.entityId === "k"
      : w.kind === "slow"
      ? w.write.ref.entityId === "k"
      : w.kind === "debt" && w.ref.entityId === "k";
  const t = createTestLimiter({
    store: {
      hook: async (phase, op, ws) => {
        if (!armed || op !== "write" || phase !== "after") return;
        if (!ws.some(onChild)) return;
        // The consume's charge of the child applies at once; its give-back
        // applies, but its answer takes 2.5 s.
        if (++childWrites === 2) await holdAnswer("applied", 2500);
      },
    },
    limiter: {
      onError: () => {},
      onStranded: (s) => stranded.push(s),
      timeoutMs: 3000,
      coalesceWrites: false,
    },
  });
  t.source.setSystemDefaults([Limit.perMinute("rpm", 1000)]);
  t.source.createEntity("org");
  t.source.createEntity("k", { parentId: "org", cascade: true });
  await t.limiter.acquire(
    { entityId: "org", resource: "api", consume: { rpm: 990 } },
    () => {},
  );
  const lease = await t.limiter.acquire(req);
  armed = true;
  const start = performance.now();
  await assert.rejects(lease.consume({ rpm: 5 }), (e: Error) => {
    assert.equal(e.name, "RateLimitExceeded", e.message);
    return true;
  });
  const took = performance.now() - start;
  assert.ok(took < 2000, `consume answered after ${took.toFixed(0)} ms`);
  await lease.commit();
  await t.limiter.close(); // waits for the give-back left running
  assert.equal(
    childWrites,
    2,
    "the consume's charge of the child, its give-back",
  );
  assert.deepEqual(
    stranded,
    [],
    "the give-back applied (late): nothing stranded",
  );
  const child = t.store.get({
    ns: "default",
    entityId: "k",
    resource: "api",
    shard: 0,
  })?.limits.get("rpm")?.tc;
  assert.equal(child, 10_000n, "the acquire's 10; the consume's 5 given back");
});
