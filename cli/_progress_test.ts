import assert from "node:assert/strict";
import type { CliContext, CliIo } from "./_context.ts";
import { startProgress } from "./_progress.ts";

function fakeContext(
  io: Partial<CliIo>,
): { ctx: CliContext; err: string[]; raw: string[] } {
  const err: string[] = [];
  const raw: string[] = [];
  const ctx: CliContext = {
    io: {
      out() {},
      err: (t) => err.push(t),
      errRaw: (t) => raw.push(t),
      ...io,
    },
    env: {},
    sleep: () => Promise.resolve(),
    now: () => 0,
    exitCode: 0,
    clients: [],
  };
  return { ctx, err, raw };
}

const tick = (ms = 5): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, ms));

/** The visible lines the terminal would show: escape sequences removed, split at `\r` and `\n`. */
function visible(raw: readonly string[]): string[] {
  return raw.join("")
    // deno-lint-ignore no-control-regex
    .replace(/\x1b\[[0-9]*G/g, "\n") // cursor to a column: a redraw
    // deno-lint-ignore no-control-regex
    .replace(/\x1b(\[[0-9;?]*[A-Za-z]|[78])/g, "")
    .split(/[\r\n]/).filter((l) => l.trim() !== "");
}

Deno.test("startProgress() draws nothing when stderr is not a terminal, nor with quiet (JSON output)", async () => {
  for (const [isTerminal, quiet] of [[false, false], [true, true]] as const) {
    const { ctx, err, raw } = fakeContext({ isTerminal: () => isTerminal });
    const p = startProgress(ctx, {
      format: "Work {bar} {value}/{total}",
      total: 10,
      delayMs: 0,
      plainIntervalMs: 1,
    }, quiet);
    await tick();
    for (let i = 1; i <= 10; i++) p.update(i);
    await tick();
    p.stop();
    assert.deepEqual(err, [], `isTerminal ${isTerminal}, quiet ${quiet}`);
    assert.deepEqual(raw, [], `isTerminal ${isTerminal}, quiet ${quiet}`);
  }
});

Deno.test("startProgress() on a terminal: lines fit its width and the count never passes the total", async () => {
  const { ctx, raw } = fakeContext({
    isTerminal: () => true,
    columns: () => 40,
  });
  const p = startProgress(ctx, {
    format: "Redriving dead letters {bar} {value}/{total} letters",
    total: 7,
    delayMs: 0,
  });
  await tick();
  p.update(3);
  p.update(12); // more than the total: shown as the total
  await tick(120); // one redraw at cli-progress's frame rate
  p.stop();
  const lines = visible(raw);
  assert.ok(lines.length > 0, "something was drawn");
  for (const l of lines) assert.ok(l.length <= 40, `fits 40 columns: ${l}`);
  assert.ok(lines.some((l) => l.includes("7/7")), lines.join("\n"));
  assert.ok(!lines.some((l) => l.includes("12/")), lines.join("\n"));
});

Deno.test("startProgress() with plain lines off a terminal writes log lines, and a total learnt later is used", async () => {
  const { ctx, err } = fakeContext({ isTerminal: () => false });
  const p = startProgress(ctx, {
    format: "Purging {value}/{total}",
    delayMs: 0,
    plain: true,
    plainIntervalMs: 10,
  });
  await tick();
  p.update(2, {}, 4);
  await tick(40);
  p.stop();
  assert.ok(err.some((l) => l.includes("Purging 2/4")), err.join("\n"));
});
