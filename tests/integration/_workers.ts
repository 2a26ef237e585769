/**
 * Shared pieces of the stream-worker end-to-end tests: a load generator
 * that records what it consumed, snapshot totals read back from the table,
 * polling, worker processes (`zae-limiter worker run`) with their logs and
 * health endpoints, audit deletions and the archive they produce.
 */
import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import { DeleteItemCommand, PutItemCommand } from "@aws-sdk/client-dynamodb";
import { DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
import {
  Limit,
  RateLimiter,
  RateLimitExceeded,
  type Repository,
} from "../../mod.ts";
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
  // The load is the input of the worker tests, not what they measure: a
  // loaded machine must not fail an acquire on the 3 s default deadline.
  // Strict mode (one write per decision): the expected snapshot events count
  // one bucket write per charge, which coalesced writes would merge.
  const limiter = new RateLimiter(repo, {
    timeoutMs: 30_000,
    coalesceWrites: false,
  });
  const out = options.into ?? expected();
  const resource = options.resource ?? "gpt-4";
  const concurrency = options.concurrency ?? 8;
  let next = 0;
  const started = Date.now();
  async function one(i: number): Promise<void> {
    const entity = options.entities[i % options.entities.length] ?? "e";
    const estimate = 100 + (i % 7) * 10;
    const actual = estimate + ((i % 3) - 1) * 25; // -25, 0 or +25
    // A refusal charged nothing: retry after its Retry-After, as a client
    // would (a slow DynamoDB Local can make hot buckets contended).
    for (let attempt = 0;; attempt++) {
      try {
        await limiter.acquire(
          { entityId: entity, resource, consume: { rpm: 1, tpm: estimate } },
          (lease) => {
            options.onAcquired?.(i, Date.now());
            if (actual !== estimate) lease.adjust({ tpm: actual - estimate });
          },
        );
        break;
      } catch (e) {
        if (!(e instanceof RateLimitExceeded) || attempt >= 20) throw e;
        await new Promise((r) =>
          setTimeout(r, 10 + e.retryAfterSeconds * 1000)
        );
      }
    }
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

// ---------------------------------------------------------------------------
// Worker processes (`zae-limiter worker run`)
// ---------------------------------------------------------------------------

const CLI = new URL("../../cli.ts", import.meta.url).pathname;

/** A `zae-limiter worker run` child process and its JSON log lines. */
export interface WorkerProc {
  /** Its `--worker-id`. */
  readonly id: string;
  /** The process. */
  readonly child: Deno.ChildProcess;
  /** stderr lines, as they come. */
  readonly log: string[];
  /** Resolves when stderr closed. */
  readonly drained: Promise<void>;
}

/** Starts `cli.ts worker run --name table --endpoint-url url --port 0 --worker-id id ...args`. */
export function spawnWorker(
  id: string,
  table: string,
  url: string,
  args: readonly string[] = [],
): WorkerProc {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "--allow-write",
      "--allow-sys",
      CLI,
      "worker",
      "run",
      "--name",
      table,
      "--endpoint-url",
      url,
      "--port",
      "0",
      "--host",
      "127.0.0.1",
      "--worker-id",
      id,
      ...args,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: { AWS_REGION: "us-east-1" },
  }).spawn();
  const log: string[] = [];
  const drained = (async () => {
    const decoder = new TextDecoder();
    let rest = "";
    for await (const chunk of child.stderr) {
      const lines = (rest + decoder.decode(chunk, { stream: true })).split(
        "\n",
      );
      rest = lines.pop() ?? "";
      log.push(...lines.filter((l) => l !== ""));
      if (Deno.env.get("ZAEL_DEBUG")) {
        const text = lines.filter((l) => l !== "").map((l) => `[${id}] ${l}\n`);
        Deno.stderr.writeSync(new TextEncoder().encode(text.join("")));
      }
    }
    if (rest !== "") log.push(rest);
  })();
  return { id, child, log, drained };
}

/** The worker's log lines that are JSON objects. */
export function logEntries(p: WorkerProc): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of p.log) {
    try {
      const entry = JSON.parse(line);
      if (typeof entry === "object" && entry !== null) out.push(entry);
    } catch {
      // not a JSON line
    }
  }
  return out;
}

/** The port of the worker's health server (from its log). */
export function listeningPort(p: WorkerProc): number {
  for (const entry of logEntries(p)) {
    if (entry.message === "Health server listening") {
      return entry.port as number;
    }
  }
  throw new Error(`No health server port in the log of ${p.id}`);
}

/** Waits for the health server, then returns its base URL. */
export async function healthUrl(p: WorkerProc): Promise<string> {
  await waitFor(`${p.id} to listen`, () => {
    try {
      listeningPort(p);
      return true;
    } catch {
      return false;
    }
  }, 30_000);
  return `http://127.0.0.1:${listeningPort(p)}`;
}

/** GET a health path: status and body. */
export async function probe(
  base: string,
  path: "/livez" | "/readyz" | "/metrics",
): Promise<{ status: number; body: string }> {
  const res = await fetch(`${base}${path}`, {
    signal: AbortSignal.timeout(5_000),
  });
  return { status: res.status, body: await res.text() };
}

/** The value of one sample in Prometheus text (`name{labels}`), or undefined. */
export function sample(text: string, series: string): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith(`${series} `)) return Number(line.split(" ")[1]);
  }
  return undefined;
}

/** Sends `signal` and waits for the exit; returns the code and the milliseconds it took. */
export async function stopWorker(
  p: WorkerProc,
  signal: Deno.Signal = "SIGTERM",
): Promise<{ code: number; ms: number }> {
  const started = Date.now();
  try {
    p.child.kill(signal);
  } catch {
    // already exited
  }
  const status = await p.child.status;
  await p.drained;
  return { code: status.code, ms: Date.now() - started };
}

/** SIGKILLs every process still running and waits for them (test clean-up). */
export async function killAll(procs: readonly WorkerProc[]): Promise<void> {
  for (const p of procs) {
    try {
      p.child.kill("SIGKILL");
    } catch {
      // already exited
    }
    await p.child.status;
    await p.drained;
  }
}

// ---------------------------------------------------------------------------
// Audit deletions and the archive directory
// ---------------------------------------------------------------------------

/** Writes and deletes `count` audit items (what TTL does), returning their event ids. */
export async function deleteAudits(
  client: {
    send(command: PutItemCommand | DeleteItemCommand): Promise<unknown>;
  },
  table: string,
  ns: string,
  prefix: string,
  count: number,
): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const id = `${prefix}-${String(i).padStart(3, "0")}`;
    const key = {
      PK: { S: `${ns}/AUDIT#${prefix}` },
      SK: { S: `#AUDIT#${id}` },
    };
    await client.send(
      new PutItemCommand({
        TableName: table,
        Item: {
          ...key,
          "event_id": { S: id },
          "entity_id": { S: prefix },
          action: { S: "entity_created" },
          timestamp: { S: new Date().toISOString() },
        },
      }),
    );
    await client.send(new DeleteItemCommand({ TableName: table, Key: key }));
    ids.push(id);
  }
  return ids;
}

/** Every `.jsonl.gz` file under `dir`, sorted. */
export async function archivedFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(d: string): Promise<void> {
    for await (const e of Deno.readDir(d)) {
      const p = `${d}/${e.name}`;
      if (e.isDirectory) await walk(p);
      else if (e.name.endsWith(".jsonl.gz")) out.push(p);
    }
  }
  await walk(dir);
  return out.sort();
}

/** Every row of every archive object under `dir`. */
export async function archivedRows(
  dir: string,
): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = [];
  for (const f of await archivedFiles(dir)) {
    const text = new TextDecoder().decode(gunzipSync(await Deno.readFile(f)));
    for (const line of text.split("\n")) {
      if (line !== "") rows.push(JSON.parse(line));
    }
  }
  return rows;
}

// ---------------------------------------------------------------------------
// A TCP proxy that can catch one request on the wire
// ---------------------------------------------------------------------------

/** A loopback TCP proxy in front of a port. */
export interface TcpProxy extends AsyncDisposable {
  /** The port clients connect to. */
  readonly port: number;
  /**
   * The first time a client sends bytes containing `needle` (e.g. the
   * `X-Amz-Target` of a command), holds them and calls `fn` with a function
   * that forwards them: `fn` decides what happens before and after.
   */
  catchOnce(
    needle: string,
    fn: (forward: () => Promise<void>) => Promise<void>,
  ): void;
  /** Closes the listener and every connection. */
  close(): Promise<void>;
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length;) {
    off += await conn.write(data.subarray(off));
  }
}

/** Starts a proxy to `127.0.0.1:targetPort`; a refused upstream closes the client's connection. */
export function startTcpProxy(targetPort: number): TcpProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  let trap:
    | {
      needle: string;
      fn: (forward: () => Promise<void>) => Promise<void>;
    }
    | undefined;
  let closed = false;
  const shut = (c: Deno.Conn): void => {
    if (!open.delete(c)) return;
    try {
      c.close();
    } catch {
      // already closed
    }
  };
  async function pipe(
    from: Deno.Conn,
    to: Deno.Conn,
    inspect: boolean,
  ): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await from.read(buf);
      if (n === null) return;
      const chunk = buf.slice(0, n);
      const t = trap;
      if (inspect && t && new TextDecoder().decode(chunk).includes(t.needle)) {
        trap = undefined;
        await t.fn(() => writeAll(to, chunk));
      } else {
        await writeAll(to, chunk);
      }
    }
  }
  async function handle(client: Deno.Conn): Promise<void> {
    open.add(client);
    let upstream: Deno.Conn;
    try {
      upstream = await Deno.connect({
        hostname: "127.0.0.1",
        port: targetPort,
      });
    } catch {
      shut(client);
      return;
    }
    if (closed) {
      shut(client);
      upstream.close();
      return;
    }
    open.add(upstream);
    const a = pipe(client, upstream, true).catch(() => {});
    const b = pipe(upstream, client, false).catch(() => {});
    await Promise.race([a, b]);
    shut(client);
    shut(upstream);
    await Promise.all([a, b]);
  }
  const accepting = (async () => {
    try {
      for await (const client of listener) {
        const task = handle(client).catch(() => {});
        tasks.add(task);
        void task.finally(() => tasks.delete(task));
      }
    } catch {
      // closed
    }
  })();
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    try {
      listener.close();
    } catch {
      // already closed
    }
    for (const c of [...open]) shut(c);
    await accepting;
    await Promise.all([...tasks]);
  };
  return {
    port: (listener.addr as Deno.NetAddr).port,
    catchOnce(needle, fn) {
      trap = { needle, fn };
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
