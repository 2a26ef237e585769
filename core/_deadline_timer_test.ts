import assert from "node:assert/strict";
import { cancelDeadline, scheduleDeadline } from "./_deadline_timer.ts";

function fired(): { at: number | null; fire: () => void } {
  const t0 = performance.now();
  const out = {
    at: null as number | null,
    fire: () => {
      out.at = performance.now() - t0;
    },
  };
  return out;
}

Deno.test("deadlines fire in order, each not before its time; a cancelled one never fires", async () => {
  const late = fired();
  const early = fired();
  const cancelled = fired();
  scheduleDeadline(120, late.fire);
  // Earlier than the armed one: the shared timer is moved forward.
  scheduleDeadline(40, early.fire);
  cancelDeadline(scheduleDeadline(60, cancelled.fire));
  await new Promise((r) => setTimeout(r, 400));
  assert.ok(early.at !== null && early.at >= 40, String(early.at));
  assert.ok(late.at !== null && late.at >= 120, String(late.at));
  assert.ok(late.at > early.at);
  assert.equal(cancelled.at, null);
});

Deno.test("a deadline scheduled after the others were cancelled still fires", async () => {
  cancelDeadline(scheduleDeadline(30, () => {}));
  const d = fired();
  scheduleDeadline(50, d.fire);
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(d.at !== null && d.at >= 50, String(d.at));
});
