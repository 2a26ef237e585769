/**
 * The acquire benchmark's tables, shared by `dev/bench.ts` and
 * `dev/bench_compare.ts`: huge limits (buckets far from empty), 32 entities
 * each with a cascade child, 32 raw items for the conditional `UpdateItem`
 * baseline, and the three scenarios (one limit, two limits, cascade).
 *
 * @module
 */
import {
  type DynamoDBClient,
  PutItemCommand,
  UpdateItemCommand,
  type UpdateItemCommandInput,
} from "@aws-sdk/client-dynamodb";
import type * as Lib from "../mod.ts";

/** One benchmark operation of worker `w`. */
export type Op = (worker: number) => Promise<unknown>;

/** Stores the limits and entities and returns the scenarios of a limiter on `repo`. */
export async function acquireScenarios(
  lib: Pick<typeof Lib, "Limit" | "RateLimiter">,
  repo: Lib.Repository,
): Promise<[string, Op][]> {
  const { Limit } = lib;
  const huge = 1_000_000_000;
  await repo.setSystemDefaults([
    Limit.perMinute("rpm", huge),
    Limit.perMinute("tpm", huge),
  ]);
  await repo.setResourceDefaults("one", [Limit.perMinute("rpm", huge)]);
  await repo.setResourceDefaults("two", [
    Limit.perMinute("rpm", huge),
    Limit.perMinute("tpm", huge),
  ]);
  for (let w = 0; w < 32; w++) {
    await repo.createEntity(`parent-${w}`);
    await repo.createEntity(`child-${w}`, {
      parentId: `parent-${w}`,
      cascade: true,
    });
  }
  // Strict mode: every decision its own write (each worker has its own
  // key and one call at a time, so nothing would coalesce anyway; older
  // builds ignore the option).
  const limiter = new lib.RateLimiter(repo, { coalesceWrites: false });
  const acquire = (
    entityId: string,
    resource: string,
    consume: Record<string, number>,
  ) => limiter.acquire({ entityId, resource, consume }, () => {});
  return [
    ["one limit", (w) => acquire(`key-${w}`, "one", { rpm: 1 })],
    ["two limits", (w) => acquire(`key-${w}`, "two", { rpm: 1, tpm: 100 })],
    ["cascade", (w) => acquire(`child-${w}`, "two", { rpm: 1, tpm: 100 })],
  ];
}

/** Puts the 32 raw items into `table` and returns the baseline operation. */
export async function rawBaseline(
  client: DynamoDBClient,
  table: string,
): Promise<Op> {
  for (let w = 0; w < 32; w++) {
    await client.send(
      new PutItemCommand({
        TableName: table,
        Item: {
          PK: { S: `bench/RAW#${w}` },
          SK: { S: "#STATE" },
          tk: { N: String(10n ** 15n) },
        },
      }),
    );
  }
  return (w) =>
    client.send(
      new UpdateItemCommand({
        TableName: table,
        Key: { PK: { S: `bench/RAW#${w}` }, SK: { S: "#STATE" } },
        UpdateExpression: "ADD #tk :d",
        ConditionExpression: "#tk >= :c",
        ExpressionAttributeNames: { "#tk": "tk" },
        ExpressionAttributeValues: {
          ":d": { N: "-1000" },
          ":c": { N: "1000" },
        },
      }),
    );
}

/**
 * `repo`'s table and namespace opened again on a client of its own (as
 * another process would), with a count of the calls that client sends.
 */
export async function reopen(
  lib: Pick<typeof Lib, "Repository">,
  repo: Lib.Repository,
  client: () => { client: DynamoDBClient; calls: () => number },
): Promise<{ repo: Lib.Repository; calls: () => number }> {
  const c = client();
  const r = await lib.Repository.open({
    client: c.client,
    stack: repo.tableName,
    namespace: repo.namespaceName,
  });
  return { repo: r, calls: c.calls };
}

/** What a local reserve row did over its run. */
export interface ReserveFigures {
  /** Acquires decided (admitted or refused). */
  readonly decisions: number;
  /** Refusals (with limits far from exhausted, each one is false). */
  readonly refusals: number;
  /** DynamoDB calls its limiters' clients sent. */
  readonly calls: number;
  /** Tokens held in slices when the load stopped (what a crash would strand). */
  readonly heldAtStop: number;
  /** Tokens that could not be given back at close (should be 0). */
  readonly stranded: number;
  /** Acquires that failed (`RateLimiterUnavailable`, e.g. a deadline on a loaded machine): counted, not decided. */
  readonly failed: number;
}

/** A local reserve row: its operation, and `finish()` closes its limiters and tells what it did. */
export interface ReserveRow {
  /** Row name. */
  readonly name: string;
  /** Each worker paces itself (open loop): decisions/s is the offered load, not a maximum. */
  readonly paced: boolean;
  /** One decision of worker `w` (a refusal resolves, it is counted). */
  readonly op: Op;
  /** Forgets the counts so far (after a warm-up). */
  reset(): void;
  /** Closes the limiters and returns the figures since the last `reset()`. */
  finish(): Promise<ReserveFigures>;
}

/**
 * The local reserve rows on the scenarios' limits (stored by
 * {@linkcode acquireScenarios} first): one limit and cascade with each
 * worker its own key on one limiter, and one hot key shared by two
 * limiters (two processes, 16 workers each). `client()` gives each limiter
 * its own SDK client and a count of the calls it sent.
 */
export async function reserveRows(
  lib: Pick<
    typeof Lib,
    | "Limit"
    | "RateLimiter"
    | "RateLimitExceeded"
    | "RateLimiterUnavailable"
    | "Repository"
  >,
  repo: Lib.Repository,
  client: () => { client: DynamoDBClient; calls: () => number },
): Promise<ReserveRow[]> {
  await repo.setResourceDefaults("steady", [
    lib.Limit.custom("rps", 1000, 1000, 1),
  ]);
  const open = () => reopen(lib, repo, client);
  const row = async (
    name: string,
    processes: number,
    call: (
      w: number,
    ) => {
      entityId: string;
      resource: string;
      consume: Record<string, number>;
    },
    paceMs = 0,
  ): Promise<ReserveRow> => {
    const opened = await Promise.all(
      Array.from({ length: processes }, () => open()),
    );
    const limiters = opened.map((o) =>
      new lib.RateLimiter(o.repo, { localReserve: { env: {} } })
    );
    const callsNow = () => opened.reduce((s, o) => s + o.calls(), 0);
    let decisions = 0;
    let refusals = 0;
    let failed = 0;
    let callsAt = 0;
    return {
      name,
      paced: paceMs > 0,
      op: async (w) => {
        const limiter = limiters[w % processes] as Lib.RateLimiter;
        const t = performance.now();
        try {
          await limiter.acquire(call(w), () => {});
          decisions++;
        } catch (e) {
          if (e instanceof lib.RateLimitExceeded) {
            refusals++;
            decisions++;
          } else if (e instanceof lib.RateLimiterUnavailable) failed++;
          else throw e;
        }
        const wait = paceMs - (performance.now() - t);
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      },
      reset() {
        decisions = 0;
        refusals = 0;
        failed = 0;
        callsAt = callsNow();
      },
      async finish() {
        let held = 0;
        let stranded = 0;
        for (const l of limiters) {
          for (const v of Object.values(l.reserveStats()?.heldTokens ?? {})) {
            held += v;
          }
        }
        for (const l of limiters) {
          await l.close();
          for (
            const v of Object.values(l.reserveStats()?.strandedTokens ?? {})
          ) stranded += v;
        }
        // The give-backs at close are counted: they are writes of the row.
        return {
          decisions,
          refusals,
          calls: callsNow() - callsAt,
          heldAtStop: held,
          stranded,
          failed,
        };
      },
    };
  };
  return [
    await row("reserve one limit", 1, (w) => ({
      entityId: `key-${w}`,
      resource: "one",
      consume: { rpm: 1 },
    })),
    await row("reserve cascade", 1, (w) => ({
      entityId: `child-${w}`,
      resource: "two",
      consume: { rpm: 1, tpm: 100 },
    })),
    await row("reserve hot key 2x16", 2, () => ({
      entityId: "hot-key",
      resource: "one",
      consume: { rpm: 1 },
    })),
    // A real limit (1,000 a second, capacity 1,000) under a steady 800 a
    // second from two processes: an ideal bucket refuses none of it, so
    // every refusal is false (tokens another process held).
    await row("reserve steady 80% 2x16", 2, () => ({
      entityId: "steady-key",
      resource: "steady",
      consume: { rps: 1 },
    }), 40),
  ];
}

/**
 * The hot key: one bucket that every caller of a limiter acquires on (one
 * API key or one model taking all the traffic). `coalesceWrites: false` is
 * strict mode (every decision its own write).
 */
export function hotKey(
  lib: Pick<typeof Lib, "RateLimiter">,
  repo: Lib.Repository,
  coalesceWrites: boolean,
): Op {
  const limiter = new lib.RateLimiter(repo, { coalesceWrites });
  return () =>
    limiter.acquire(
      { entityId: "hot-key", resource: "one", consume: { rpm: 1 } },
      () => {},
    );
}

/** Counts the commands a client sends (the store calls of a limiter on it). */
export function callCounter(
  client: DynamoDBClient,
): { readonly count: number } {
  const counter = { count: 0 };
  client.middlewareStack.add(
    (next) => (args) => {
      counter.count++;
      return next(args);
    },
    { step: "initialize", name: "benchCallCounter" },
  );
  return counter;
}

/**
 * The stored format's floor for each scenario: the writes one warm acquire
 * sends for each worker, captured once and replayed straight through
 * the SDK (same key, same update and condition expressions), without the
 * library. Bounds that stop holding as time passes or the library's own
 * refill writes move the balance are relaxed (`alwaysHolds`); every other
 * value is as captured (the limits are far from their bounds). The writes of one
 * acquire (a cascade's child and parent) are sent together, as the
 * limiter's fast path sends them. The difference between
 * this and the raw one-attribute `UpdateItem` is what DynamoDB spends on the
 * bucket item (its size, the ALL-projected GSI2 copy, the stream images)
 * and on the conditions; the difference between an acquire and this is the
 * library's own cost.
 */
export async function formatFloors(
  client: DynamoDBClient,
  scenarios: readonly (readonly [string, Op])[],
  workers: number,
): Promise<Map<string, Op>> {
  const capture = captureHook(client);
  const floors = new Map<string, Op>();
  for (const [name, op] of scenarios) {
    const writes: UpdateItemCommandInput[][] = [];
    for (let w = 0; w < workers; w++) {
      await op(w); // warm this worker's buckets and caches
      // A warm acquire's plain writes (a refill write, conditioned on the
      // exact rf, could never hold again): a few tries.
      let got: UpdateItemCommandInput[] = [];
      for (let t = 0; t < 8; t++) {
        got = [];
        capture.into = got;
        await op(w);
        capture.into = null;
        if (
          got.length > 0 &&
          got.every((i) => !/\bSET\b/.test(i.UpdateExpression ?? ""))
        ) break;
      }
      if (got.length === 0) throw new Error(`${name}: no write captured`);
      writes.push(got.map(alwaysHolds));
    }
    floors.set(
      name,
      (w) =>
        Promise.all(
          (writes[w] ?? []).map((i) => client.send(new UpdateItemCommand(i))),
        ),
    );
  }
  return floors;
}

/** One capturing middleware per client: the writes sent while `into` is set. */
const hooks = new WeakMap<
  DynamoDBClient,
  { into: UpdateItemCommandInput[] | null }
>();

function captureHook(
  client: DynamoDBClient,
): { into: UpdateItemCommandInput[] | null } {
  let hook = hooks.get(client);
  if (hook) return hook;
  const h: { into: UpdateItemCommandInput[] | null } = { into: null };
  client.middlewareStack.add(
    (next) => (args) => {
      const input = args.input as Partial<UpdateItemCommandInput>;
      if (h.into && input.UpdateExpression !== undefined) {
        h.into.push(input as UpdateItemCommandInput);
      }
      return next(args);
    },
    { step: "initialize", name: "benchFloorCapture" },
  );
  hooks.set(client, hook = h);
  return hook;
}

/**
 * The captured write with conditions that keep holding while the balance
 * moves (the library's own refill writes raise it between cells): the `rf`
 * lower bound becomes 0 and each upper bound of a balance window a value of
 * its own far above any balance. The expression keeps its shape: the same
 * comparisons and, but for one placeholder per window, the same values.
 */
function alwaysHolds(input: UpdateItemCommandInput): UpdateItemCommandInput {
  const names = input.ExpressionAttributeNames ?? {};
  const values = { ...input.ExpressionAttributeValues };
  let cond = input.ConditionExpression ?? "";
  for (const m of cond.matchAll(/(#\w+|\brf\b) >= (:\w+)/g)) {
    const name = m[1]?.startsWith("#") ? names[m[1]] : m[1];
    if (name === "rf" && m[2]) values[m[2]] = { N: "0" };
  }
  let n = 0;
  cond = cond.replace(/BETWEEN (:\w+) AND (:\w+)/g, (_all, lo: string) => {
    const hi = `:floorMax${n++}`;
    values[hi] = { N: String(10n ** 30n) };
    return `BETWEEN ${lo} AND ${hi}`;
  });
  cond = cond.replace(/(\S+) <= (:\w+)/g, (_all, attr: string) => {
    const hi = `:floorMax${n++}`;
    values[hi] = { N: String(10n ** 30n) };
    return `${attr} <= ${hi}`;
  });
  return {
    ...input,
    ConditionExpression: cond,
    ExpressionAttributeValues: values,
  };
}
