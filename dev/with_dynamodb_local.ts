// deno-lint-ignore-file no-console -- a command-line wrapper: printing is its job
/**
 * Runs a command with one DynamoDB Local started for it: sets
 * `ZAEL_TEST_ENDPOINT`, forwards the exit code, and stops DynamoDB Local on
 * exit and on Ctrl-C. Usage: `deno run -A dev/with_dynamodb_local.ts deno test ...`.
 */
import { DynamoDbLocalError, startDynamoDbLocal } from "./dynamodb_local.ts";

const [cmd, ...args] = Deno.args;
if (!cmd) {
  console.error("usage: with_dynamodb_local.ts COMMAND [ARGS...]");
  Deno.exit(2);
}
let local;
try {
  local = await startDynamoDbLocal();
} catch (e) {
  console.error(e instanceof DynamoDbLocalError ? e.message : e);
  Deno.exit(1);
}
// `deno` means this very binary (it may come from npx and not be on PATH).
const child = new Deno.Command(cmd === "deno" ? Deno.execPath() : cmd, {
  args,
  env: { ZAEL_TEST_ENDPOINT: local.endpoint },
  stdin: "inherit",
  stdout: "inherit",
  stderr: "inherit",
}).spawn();
const onSignal = (): void => {
  try {
    child.kill("SIGTERM");
  } catch {
    // gone
  }
};
Deno.addSignalListener("SIGINT", onSignal);
Deno.addSignalListener("SIGTERM", onSignal);
const status = await child.status;
await local.stop();
Deno.exit(status.code);
