import assert from "node:assert/strict";
import { createProgressReporter, formatProgress } from "./progress.ts";

const SNAPSHOT = {
  phase: "copy" as const,
  scanned: 44_522,
  baseline: 0,
  total: 34_216,
  written: 44_000,
  alreadyPresent: 522,
  deleted: 0,
  segmentsDone: 1,
  segments: 4,
  consumedWcu: 44_000,
  consumedRcu: 100,
  startedAt: 0,
  now: 56_000,
};

Deno.test("formatProgress() never counts past the total when the estimate was low", () => {
  const line = formatProgress(SNAPSHOT, { mode: "plain" });
  assert.match(line, /44,522\/44,522 items/);
  assert.doesNotMatch(line, /34,216/);
});

Deno.test("the tty reporter clears the line and stays within the terminal width", () => {
  const out: string[] = [];
  const report = createProgressReporter({
    write: (t) => out.push(t),
    tty: true,
    columns: 60,
    clock: { now: () => 0 },
  });
  report({ kind: "progress", migration: "m", snapshot: SNAPSHOT });
  const text = out.join("");
  assert.ok(text.startsWith("\r\x1b[2K"), JSON.stringify(text));
  assert.ok(text.length - "\r\x1b[2K".length <= 59, JSON.stringify(text));
});
