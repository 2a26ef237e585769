/**
 * The admission oracle with waiting and partial grants on DynamoDB Local
 * (`../_oracle/wait_partial_history.ts` says how calls become the checker's
 * operations): several limiters on one table, the real clock (no clock
 * sync: the history's intervals and the limiter use the same clock), a
 * store wrapper that reports every write that applied, and a bounded number
 * of histories (3, about 2 s each). 0 over-admissions, and no refusal
 * without cause.
 */
import fc from "fast-check";
import { systemClock } from "../../mod.ts";
import type { BucketStore, BucketWrite } from "../../testing.ts";
import { DynamoBucketStore } from "../../core/store/dynamo_bucket_store.ts";
import { tableOf } from "../../core/store/table.ts";
import { certainlyNotApplied } from "../../core/transport.ts";
import {
  checkRun,
  type HistoryEnv,
  type Recorder,
  runHistory,
  tpmLimit,
} from "../_oracle/wait_partial_history.ts";
import { freshRepo } from "./_harness.ts";

/** Reports each write that applied (and, as ambiguous, each that may have). */
function recording(inner: BucketStore, rec: Recorder): BucketStore {
  const send = async <R extends { readonly ok: boolean }>(
    ws: readonly BucketWrite[],
    fn: () => Promise<R>,
  ): Promise<R> => {
    rec.sent();
    const start = BigInt(Date.now());
    let r: R;
    try {
      r = await fn();
    } catch (e) {
      const c = rec.call();
      if (c) c.faulted = true;
      if (!certainlyNotApplied(e)) {
        rec.applied(ws, start, BigInt(Date.now()), "ambiguous");
      }
      throw e;
    }
    if (r.ok) rec.applied(ws, start, BigInt(Date.now()));
    else {
      const c = rec.call();
      if (c) c.lost++;
    }
    return r;
  };
  return {
    name: inner.name,
    read: (refs, entity) => inner.read(refs, entity),
    write: (w, o) => send([w], () => inner.write(w, o)),
    transact: (ws) => send(ws, () => inner.transact(ws)),
  };
}

Deno.test({
  name:
    "oracle on DynamoDB Local: random histories with waiting and partial grants never over-admit",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const disposers: AsyncDisposable[] = [];
    const dynamo: HistoryEnv = {
      async open(sc, rec) {
        const env = await freshRepo({ clock: systemClock });
        disposers.push(env);
        await env.repo.setSystemDefaults([tpmLimit(sc)]);
        await env.repo.createEntity("parent");
        await env.repo.createEntity("child", {
          parentId: "parent",
          cascade: true,
        });
        return {
          store: recording(new DynamoBucketStore(tableOf(env.repo)), rec),
          source: env.repo,
        };
      },
    };
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.record({
            seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
            capacity: fc.integer({ min: 3, max: 12 }),
            clients: fc.integer({ min: 2, max: 3 }),
            faults: fc.constant(false),
          }),
          async (sc) => checkRun(sc, await runHistory(sc, dynamo)),
        ),
        { numRuns: 3, endOnFailure: true },
      );
    } finally {
      for (const d of disposers) await d[Symbol.asyncDispose]();
    }
  },
});
