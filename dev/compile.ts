// deno-lint-ignore-file no-console -- a build script reports what it did
/**
 * `deno task compile`: builds `dist/zae-limiter`, one binary of the CLI, with
 * the exact permissions the CLI needs, then runs it: the task succeeds only
 * when the binary answers `--version` with this client's version, `--help`
 * and `version --help` (see `dev/verify_cli.ts`). Otherwise the binary is
 * deleted and the task exits 1 with the reason.
 *
 * `deno compile` downloads the Deno runtime (`denort`) of the running Deno
 * version unless `DENORT_BIN` points to one. Where that download is
 * unreachable, the task exits 1 and names the two alternatives: the bundle
 * (`deno task bundle`) and `deno install -g` (`deno task install:cli`).
 * With `--if-possible` (CI), only that case is reported and skipped (exit 0);
 * a binary that does not answer still fails.
 *
 * @module
 */
import { verifyCli } from "./verify_cli.ts";

const OUTPUT = "dist/zae-limiter";
const ALTERNATIVES =
  "Alternatives that need no download: 'deno task bundle' (dist/zae-limiter.js, run with " +
  "'deno run --allow-net --allow-env --allow-read --allow-run --allow-sys=hostname,osRelease dist/zae-limiter.js') " +
  "or 'deno task install:cli' (the bundle as a 'zae-limiter' command, via deno install -g).";

async function removeOutput(): Promise<void> {
  await Deno.remove(OUTPUT).catch(() => {});
}

async function main(): Promise<number> {
  const ifPossible = Deno.args.includes("--if-possible");
  const denortBin = Deno.env.get("DENORT_BIN");
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "compile",
      "--frozen",
      // The CLI talks to AWS or a local endpoint, reads AWS config/credential files and env,
      // and asks whether a crashed migration's holder still runs (kill -0 needs --allow-run).
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "--allow-run",
      "--allow-sys=hostname,osRelease",
      "--output",
      OUTPUT,
      "cli.ts",
    ],
    stdout: "inherit",
    stderr: "piped",
    signal: AbortSignal.timeout(180_000),
  }).spawn();
  const out = await child.output();
  const stderr = new TextDecoder().decode(out.stderr);
  if (!out.success) {
    const cause = stderr.split("\n").map((l) => l.trim())
      .map((l) => l.replace(/^\d+: /, ""))
      .find((l) => /error sending request|dns|connect|timed? ?out/i.test(l));
    const unreachable = out.signal === "SIGTERM" || out.signal === "SIGKILL" ||
      (/denort|dl\.deno\.land|base binary/i.test(stderr) &&
        cause !== undefined);
    if (unreachable && !denortBin) {
      console.error(
        `Cannot compile ${OUTPUT}: the Deno runtime (denort ${Deno.version.deno}) could not be downloaded` +
          ` (${cause ?? "no answer within 180 s"}). ` +
          "Set DENORT_BIN to a denort binary of the same Deno version to build offline. " +
          ALTERNATIVES,
      );
      if (ifPossible) {
        console.log("skipping deno compile (--if-possible)");
        return 0;
      }
      return 1;
    }
    console.error(stderr);
    await removeOutput();
    console.error(
      `Cannot compile ${OUTPUT}: deno compile exited ${out.code}` +
        (denortBin
          ? ` (DENORT_BIN is "${denortBin}": it must be the denort runtime of Deno ${Deno.version.deno}). ${ALTERNATIVES}`
          : /denort|base binary/i.test(stderr)
          ? ` (the Deno runtime is unusable). ${ALTERNATIVES}`
          : ""),
    );
    // One exit status for every failure, whatever deno compile died of (a crash is 134).
    return 1;
  }
  const problem = await verifyCli([`./${OUTPUT}`], {
    env: { DENO_NO_UPDATE_CHECK: "1" },
  });
  if (problem !== null) {
    await removeOutput();
    console.error(
      `Cannot compile ${OUTPUT}: the binary is not the zae-limiter CLI: ${problem}.` +
        (denortBin
          ? ` DENORT_BIN is "${denortBin}": it must be the denort runtime of Deno ${Deno.version.deno}, not a deno binary.`
          : "") +
        " The binary was deleted. " + ALTERNATIVES,
    );
    return 1;
  }
  console.log(
    `compiled ${OUTPUT}: it answers --version (${
      (await Deno.stat(OUTPUT)).size >>> 20
    } MiB)`,
  );
  return 0;
}

if (import.meta.main) Deno.exit(await main());
