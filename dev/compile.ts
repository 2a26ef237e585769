// deno-lint-ignore-file no-console -- a build script reports what it did
/**
 * `deno task compile`: builds `dist/zae-limiter`, one binary of the CLI, with
 * the exact permissions the CLI needs. `deno compile` downloads the Deno
 * runtime (`denort`) unless `DENORT_BIN` points to one. With `--if-possible`
 * (CI), an unreachable download is reported and skipped instead of failing.
 */
const ifPossible = Deno.args.includes("--if-possible");
const args = [
  "compile",
  // The CLI talks to AWS or a local endpoint, reads AWS config/credential files and env.
  "--allow-net",
  "--allow-env",
  "--allow-read",
  "--allow-sys=hostname,osRelease",
  "--output",
  "dist/zae-limiter",
  "cli.ts",
];
const child = new Deno.Command(Deno.execPath(), {
  args,
  stdout: "inherit",
  stderr: "piped",
}).spawn();
const timer = setTimeout(() => {
  try {
    child.kill("SIGKILL");
  } catch {
    // done already
  }
}, 180_000);
const out = await child.output();
clearTimeout(timer);
const stderr = new TextDecoder().decode(out.stderr);
if (out.success) {
  console.log("compiled dist/zae-limiter");
  Deno.exit(0);
}
const downloadProblem =
  /download|denort|dns|connect|network|timed? ?out|tcp|certificate/i.test(
    stderr,
  ) ||
  out.signal === "SIGKILL";
if (ifPossible && downloadProblem && !Deno.env.get("DENORT_BIN")) {
  console.log(
    "skipping deno compile: the Deno runtime (denort) could not be downloaded from this machine. " +
      "Set DENORT_BIN to a denort binary of the same Deno version to build offline.",
  );
  Deno.exit(0);
}
console.error(stderr);
Deno.exit(out.code || 1);
