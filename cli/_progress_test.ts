import assert from "node:assert/strict";
import type { CliContext, CliIo } from "./_context.ts";
import {
  formatPlainProgress,
  progressIntervalFromEnv,
  startProgress,
} from "./_progress.ts";

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

Deno.test("startProgress() draws nothing with quiet (JSON output)", async () => {
  for (const isTerminal of [false, true]) {
    const { ctx, err, raw } = fakeContext({ isTerminal: () => isTerminal });
    const p = startProgress(ctx, {
      format: "Work {bar} {value}/{total}",
      total: 10,
      delayMs: 0,
      plainIntervalMs: 0,
    }, true);
    await tick();
    for (let i = 1; i <= 10; i++) p.update(i);
    p.stop();
    assert.deepEqual(err, [], `isTerminal ${isTerminal}`);
    assert.deepEqual(raw, [], `isTerminal ${isTerminal}`);
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

Deno.test("startProgress() off a terminal writes plain lines: throttled, a total learnt later, never past 100 %, a last line at the end", () => {
  let now = 0;
  const { ctx, err, raw } = fakeContext({ isTerminal: () => false });
  const p = startProgress({ ...ctx, now: () => now }, {
    format: "Purging {bar} {value}/{total} items",
    delayMs: 1000,
    plainIntervalMs: 5000,
  });
  p.update(1);
  assert.deepEqual(err, [], "nothing before the delay");
  now = 1000;
  p.update(2, {}, 8);
  now = 2000;
  p.update(3); // throttled
  now = 6000;
  p.update(6);
  now = 6500;
  p.update(12); // past the total: shown as the total, at the end
  p.stop();
  p.update(9); // after stop: ignored
  assert.deepEqual(err, [
    "Purging 2/8 items (25%)",
    "Purging 6/8 items (75%)",
    "Purging 8/8 items (100%)",
  ]);
  assert.deepEqual(raw, []);
});

Deno.test("startProgress() writes plain lines on a dumb terminal and for a terminal without a raw writer", () => {
  for (
    const [withRaw, env] of [
      [true, { TERM: "dumb" }],
      [false, {}],
    ] as const
  ) {
    const { ctx: base, err, raw } = fakeContext({ isTerminal: () => true });
    const { errRaw: _errRaw, ...withoutRaw } = base.io;
    const ctx = { ...base, io: withRaw ? base.io : withoutRaw };
    const p = startProgress({ ...ctx, env }, {
      format: "Resetting {bar} {value}/{total}",
      total: 2,
      delayMs: 0,
      plainIntervalMs: 0,
    });
    p.update(1);
    p.update(2);
    p.stop();
    assert.deepEqual(err, ["Resetting 1/2 (50%)", "Resetting 2/2 (100%)"]);
    assert.deepEqual(raw, []);
  }
});

Deno.test("startProgress() takes ZAEL_PROGRESS_INTERVAL_MS as the interval and the longest delay", () => {
  const { ctx, err } = fakeContext({ isTerminal: () => false });
  const p = startProgress({ ...ctx, env: { ZAEL_PROGRESS_INTERVAL_MS: "0" } }, {
    format: "Purging namespace {id}: {value} item(s) deleted",
    payload: { id: "abc" },
  });
  p.update(25);
  p.update(50);
  p.stop();
  assert.deepEqual(err, [
    "Purging namespace abc: 25 item(s) deleted",
    "Purging namespace abc: 50 item(s) deleted",
  ]);
});

Deno.test("progressIntervalFromEnv() reads whole milliseconds and ignores anything else", () => {
  assert.equal(
    progressIntervalFromEnv({ ZAEL_PROGRESS_INTERVAL_MS: "250" }),
    250,
  );
  assert.equal(
    progressIntervalFromEnv({ ZAEL_PROGRESS_INTERVAL_MS: "-1" }),
    undefined,
  );
  assert.equal(
    progressIntervalFromEnv({ ZAEL_PROGRESS_INTERVAL_MS: "1s" }),
    undefined,
  );
  assert.equal(progressIntervalFromEnv({}), undefined);
});

Deno.test("formatPlainProgress() fills the fields, leaves the bar out and shows an unknown total as ?", () => {
  assert.equal(
    formatPlainProgress(
      "Applying {bar} {value}/{total} unit(s), ETA {eta_formatted}",
      {
        value: 1,
        total: 4,
        payload: {},
        elapsedMs: 2000,
      },
    ),
    "Applying 1/4 unit(s), ETA 6s (25%)",
  );
  assert.equal(
    formatPlainProgress("Redriving dead letters {bar} {value}/{total}", {
      value: 3,
      total: 0,
      payload: {},
      elapsedMs: 0,
    }),
    "Redriving dead letters 3/?",
  );
});

Deno.test("startProgress() on a terminal shows a total not known yet as an empty bar and ?", () => {
  const { ctx, raw } = fakeContext({
    isTerminal: () => true,
    columns: () => 80,
  });
  const p = startProgress(ctx, {
    format: "Redriving dead letters {bar} {value}/{total}",
    delayMs: 0,
  });
  p.stop();
  assert.ok(
    visible(raw).some((l) => /^Redriving dead letters -+ 0\/\?$/.test(l)),
    visible(raw).join("\n"),
  );
});
