/**
 * Shared pieces of the stream-worker end-to-end tests: a load generator
 * that records what it consumed, snapshot totals read back from the table,
 * and polling.
 */
import assert from "node:assert/strict";
import { DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
import { Limit, RateLimiter, type Repository } from "../../mod.ts";
import { endpoint } from "./_harness.ts";

/** A streams client on the local endpoint. */
export async function localStreams(): Promise<DynamoDBStreamsClient> {
  return new DynamoDBStreamsClient({
    endpoint: await endpoint(),
    region: "us-east-1",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
    maxAttempts: 3,
  });
}

/** Consumed whole tokens by `entity|resource|limit`, and acquires by `entity|resource`. */
export interface Expected {
  readonly tokens: Map<string, number>;
  readonly events: Map<string, number>;
}

/** An empty expectation. */
export function expected(): Expected {
  return { tokens: new Map(), events: new Map() };
}

function add(m: Map<string, number>, k: string, v: number): void {
  m.set(k, (m.get(k) ?? 0) + v);
}

/** Sets generous limits so every acquire of the load is admitted. */
export async function generousLimits(repo: Repository): Promise<void> {
  await repo.setSystemDefaults([
    Limit.perMinute("rpm", 1_000_000),
    Limit.perMinute("tpm", 100_000_000),
  ]);
}

/**
 * Runs `count` acquires over `entities`, `concurrency` at a time, each
 * taking 1 rpm and some tpm, then adjusting tpm up or down (LLM
 * reconciliation). Paced to `perSecond` when given. Returns what it consumed.
 */
export async function runLoad(
  repo: Repository,
  options: {
    count: number;
    entities: readonly string[];
    resource?: string;
    concurrency?: number;
    perSecond?: number;
    into?: Expected;
    onAcquired?: (i: number, at: number) => void;
  },
): Promise<Expected> {
  const limiter = new RateLimiter(repo);
  const out = options.into ?? expected();
  const resource = options.resource ?? "gpt-4";
  const concurrency = options.concurrency ?? 8;
  let next = 0;
  const started = Date.now();
  async function one(i: number): Promise<void> {
    const entity = options.entities[i % options.entities.length] ?? "e";
    const estimate = 100 + (i % 7) * 10;
    const actual = estimate + ((i % 3) - 1) * 25; // -25, 0 or +25
    await limiter.acquire(
      { entityId: entity, resource, consume: { rpm: 1, tpm: estimate } },
      (lease) => {
        options.onAcquired?.(i, Date.now());
        if (actual !== estimate) lease.adjust({ tpm: actual - estimate });
      },
    );
    add(out.tokens, `${entity}|${resource}|rpm`, 1);
    add(out.tokens, `${entity}|${resource}|tpm`, actual);
    add(out.events, `${entity}|${resource}`, 1);
  }
  async function lane(): Promise<void> {
    for (;;) {
      const i = next++;
      if (i >= options.count) return;
      if (options.perSecond) {
        const due = started + (i * 1000) / options.perSecond;
        const wait = due - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
      await one(i);
    }
  }
  await Promise.all(Array.from({ length: concurrency }, () => lane()));
  return out;
}

/** Snapshot totals of one window type, summed over windows, in the same keys as {@linkcode Expected}. */
export async function snapshotTotals(
  repo: Repository,
  entities: readonly string[],
  window = "hourly",
): Promise<Expected> {
  const out = expected();
  for (const entityId of entities) {
    const { snapshots } = await repo.getUsageSnapshots({
      entityId,
      windowType: window,
      consistent: true,
    });
    for (const s of snapshots) {
      for (const [limit, v] of Object.entries(s.counters)) {
        add(out.tokens, `${s.entityId}|${s.resource}|${limit}`, v);
      }
      add(out.events, `${s.entityId}|${s.resource}`, s.totalEvents);
    }
  }
  return out;
}

function sorted(m: Map<string, number>): [string, number][] {
  return [...m].filter(([, v]) => v !== 0).sort(([a], [b]) =>
    a.localeCompare(b)
  );
}

/** Whether two expectations are equal. */
export function sameTotals(a: Expected, b: Expected): boolean {
  return JSON.stringify([sorted(a.tokens), sorted(a.events)]) ===
    JSON.stringify([sorted(b.tokens), sorted(b.events)]);
}

/** Asserts equality with a readable diff. */
export function assertTotals(actual: Expected, want: Expected): void {
  assert.deepEqual(
    { tokens: sorted(actual.tokens), events: sorted(actual.events) },
    { tokens: sorted(want.tokens), events: sorted(want.events) },
  );
}

/** Polls `check` every 250 ms until it returns true or `timeoutMs` passes; returns the elapsed ms. */
export async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs = 60_000,
): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await check()) return Date.now() - start;
    if (Date.now() - start > timeoutMs) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
