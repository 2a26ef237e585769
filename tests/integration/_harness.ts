/**
 * Integration-test harness: one DynamoDB Local per test run (started by
 * `dev/with_dynamodb_local.ts`, which sets `ZAEL_TEST_ENDPOINT`), or one per
 * test file when run directly. Every test gets its own table.
 */
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import {
  type DynamoDbLocal,
  startDynamoDbLocal,
} from "../../dev/dynamodb_local.ts";
import { Repository, type RepositoryOptions } from "../../mod.ts";

let local: Promise<DynamoDbLocal> | null = null;
let tableCounter = 0;

/** The endpoint of the shared DynamoDB Local. */
export async function endpoint(): Promise<string> {
  const env = Deno.env.get("ZAEL_TEST_ENDPOINT");
  if (env) return env;
  local ??= startDynamoDbLocal();
  return (await local).endpoint;
}

/** Stops a DynamoDB Local this file started (call from the last test, or rely on process exit). */
export async function stopLocal(): Promise<void> {
  if (local) await (await local).stop();
  local = null;
}

/** Counts the commands a client sends, by command name. */
export interface CallCounter {
  /** Counts per command name. */
  readonly counts: Map<string, number>;
  /** Total commands. */
  total(): number;
  /** Forget everything. */
  reset(): void;
}

/** A client on the local endpoint with a command-counting middleware. */
export async function localClient(): Promise<
  { client: DynamoDBClient; calls: CallCounter }
> {
  const client = new DynamoDBClient({
    endpoint: await endpoint(),
    region: "us-east-1",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
    maxAttempts: 3,
  });
  const counts = new Map<string, number>();
  client.middlewareStack.add(
    (next, context) => (args) => {
      const name = String(context.commandName ?? "unknown");
      counts.set(name, (counts.get(name) ?? 0) + 1);
      return next(args);
    },
    { step: "initialize", name: "zaelCallCounter" },
  );
  return {
    client,
    calls: {
      counts,
      total: () => [...counts.values()].reduce((a, b) => a + b, 0),
      reset: () => counts.clear(),
    },
  };
}

/** A unique table name for one test. */
export function tableName(prefix = "t"): string {
  tableCounter++;
  return `${prefix}-${Date.now().toString(36)}-${tableCounter}-${
    Math.floor(Math.random() * 1e6).toString(36)
  }`;
}

/** A fresh table with a repository open on it; dispose to delete the table and close the client. */
export async function freshRepo(
  options: Partial<RepositoryOptions> = {},
): Promise<
  & { repo: Repository; client: DynamoDBClient; calls: CallCounter }
  & AsyncDisposable
> {
  const { client, calls } = await localClient();
  const repo = await Repository.open({
    client,
    stack: tableName(),
    provision: true,
    ...options,
  });
  return {
    repo,
    client,
    calls,
    async [Symbol.asyncDispose]() {
      await repo.deleteTable().catch(() => {});
      client.destroy();
    },
  };
}

/** A clock frozen at `start` that moves only when told. */
export function manualClock(start = Date.UTC(2026, 0, 15, 12, 0, 0)): {
  now(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
  advance(ms: number): void;
} {
  let t = start;
  return {
    now: () => t,
    sleep: (ms: number, signal?: AbortSignal) => {
      signal?.throwIfAborted();
      t += ms;
      return Promise.resolve();
    },
    advance: (ms: number) => {
      t += ms;
    },
  };
}
