/**
 * Concurrency limits and lease deadlines against the oracle on the memory
 * stores (driver: `tests/_oracle/concurrency_drive.ts`).
 */
import fc from "fast-check";
import {
  judge,
  runConcurrencyHistory,
  scenarioArb,
} from "./_oracle/concurrency_drive.ts";

Deno.test("memory store: concurrency limits never hold more than max unexpired holders, refuse only when full, and nothing moves after a lease deadline", async () => {
  await fc.assert(
    fc.asyncProperty(scenarioArb, async (sc) => {
      judge(sc, await runConcurrencyHistory(sc));
    }),
    { numRuns: 8 },
  );
});
