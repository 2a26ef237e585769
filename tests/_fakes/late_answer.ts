/**
 * A write answered late through the real transport, for tests of what the
 * library does when a write applies after its caller gave up.
 *
 * @module
 */
import assert from "node:assert/strict";
import { systemClock } from "../../core/clock.ts";
import { currentSignal, guardedSend } from "../../core/transport.ts";

/** Commands named as the SDK's are (the transport tells writes by the class name). */
class UpdateItemCommand {}

/**
 * The answer of a write that applied, sent through the real transport
 * (`guardedSend`) and held until just after its deadline passed (for a
 * coalesced write: every caller it carried gave up): the caller gets the
 * deadline's reason, the late sink learns `applied`. Call it from a memory
 * store's hook, inside the write's deadline scope.
 */
export async function answerAfterDeadline(): Promise<void> {
  const deadline = currentSignal();
  assert.ok(deadline, "the write runs under a deadline");
  const send = guardedSend(
    () =>
      new Promise((resolve) => {
        const later = () => setTimeout(() => resolve({}), 20);
        deadline.addEventListener("abort", later, { once: true });
      }),
    { defaultTimeoutMs: 5_000, localClock: systemClock, writeGraceMs: 5_000 },
  );
  await send(new UpdateItemCommand());
}
