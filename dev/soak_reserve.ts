// deno-lint-ignore-file no-console -- a command-line tool: printing is its job
/**
 * Soak test of the local reserve: the history of
 * `tests/integration/reserve_test.ts` (`tests/integration/_reserve_history.ts`:
 * three limiters with the reserve on sharing buckets on DynamoDB Local,
 * every other history with writes failing before and after they apply),
 * again and again with new seeds, each checked by the oracle on the writes
 * DynamoDB saw and on what callers saw. Uses `ZAEL_TEST_ENDPOINT` when set,
 * else starts its own DynamoDB Local.
 *
 * Usage: `deno task soak:reserve [-- --histories N] [--minutes M] [--seed S]`
 * (defaults: 100 histories, 10 minutes, a random seed). Prints one line per
 * history and a summary; exits 1 at the first violation, after printing its
 * seed and the report.
 *
 * @module
 */
import { format } from "../tests/_oracle/checker.ts";
import { stopLocal } from "../tests/integration/_harness.ts";
import { reserveHistory } from "../tests/integration/_reserve_history.ts";

function option(name: string, fallback: number): number {
  const i = Deno.args.indexOf(name);
  if (i < 0) return fallback;
  const n = Number(Deno.args[i + 1]);
  if (!Number.isFinite(n)) {
    console.error(`soak:reserve: ${name} needs a number`);
    Deno.exit(2);
  }
  return n;
}

const histories = option("--histories", 100);
const minutes = option("--minutes", 10);
const first = option("--seed", Math.floor(Math.random() * 2 ** 30));
const deadline = Date.now() + minutes * 60_000;
let admitted = 0;
let local = 0;
let runs = 0;
let code = 0;
try {
  for (let i = 0; i < histories && Date.now() < deadline; i++) {
    const seed = first + i;
    const faults = i % 2 === 1;
    const r = await reserveHistory({ faults, seed });
    runs++;
    admitted += r.counts.admitted;
    local += r.local;
    console.log(
      `history ${i + 1} seed ${seed}${faults ? " faults" : ""}: ${
        JSON.stringify(r.counts)
      }, ${r.local} from slices, ${r.lostAnswers} lost answers, ${
        r.store.ok && r.caller.ok ? "ok" : "VIOLATION"
      }`,
    );
    if (!r.store.ok || !r.caller.ok) {
      console.error(`seed ${seed}${faults ? " (faults)" : ""}`);
      if (!r.store.ok) console.error(`store history: ${format(r.store)}`);
      if (!r.caller.ok) console.error(`caller history: ${format(r.caller)}`);
      code = 1;
      break;
    }
  }
  console.log(
    `soak:reserve: ${runs} histories, ${admitted} admitted (${local} from slices), ${
      code === 0 ? "0 violations" : "a violation"
    }`,
  );
} finally {
  await stopLocal();
}
Deno.exit(code);
