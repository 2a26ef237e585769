/**
 * A deadline that passes while a write is in flight must not make the write
 * apply twice. Under Deno 2.9 the SDK's default HTTP handler (node:http)
 * was seen applying an `UpdateItem` twice when the request was aborted a
 * few milliseconds after it was sent (oracle_test's ignored finding). The
 * library therefore never aborts a write on the caller's deadline: the
 * caller gets its answer at the deadline, the write runs to its end in the
 * background (bounded by a grace), and what it did is accounted for.
 *
 * Checked against a model with the real clock: every debit is either
 * admitted (a lease) or reported stranded, so the stored consumption
 * counter `tc` can never exceed admitted + stranded.
 */
import assert from "node:assert/strict";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import {
  Limit,
  RateLimiter,
  RateLimiterUnavailable,
  Repository,
  type StrandedCharge,
} from "../../mod.ts";
import { endpoint, tableName } from "./_harness.ts";
import { num, rawBucket } from "./_stored.ts";

Deno.test({
  name:
    "writes whose deadline passes in flight apply at most once (SDK default handler, tiny deadlines, real clock)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // The SDK's default handler (node:http under Deno): the one that applied aborted writes twice.
    const client = new DynamoDBClient({
      endpoint: await endpoint(),
      region: "us-east-1",
      credentials: { accessKeyId: "local", secretAccessKey: "local" },
    });
    const repo = await Repository.open({
      client,
      stack: tableName("abort"),
      provision: true,
    });
    try {
      await repo.setResourceDefaults("api", [Limit.perMinute("rpm", 1e9)]);
      const stranded: StrandedCharge[] = [];
      const limiter = new RateLimiter(repo, {
        coalesceWrites: false,
        onStranded: (s) => stranded.push(s),
      });
      const req = { entityId: "k", resource: "api", consume: { rpm: 1 } };
      await limiter.acquire(req, () => {}); // the bucket exists and is known
      let admitted = 1;
      let timedOut = 0;
      const n = 300;
      for (let i = 0; i < n; i++) {
        try {
          // 2-12 ms: some deadlines pass before the send, most while the write is in flight.
          await limiter.acquire({ ...req, timeoutMs: 2 + (i % 11) }, () => {});
          admitted++;
        } catch (e) {
          if (!(e instanceof RateLimiterUnavailable)) throw e;
          timedOut++;
        }
      }
      // Writes left in flight finish (or hit their grace) and the charges
      // that applied late are given back: close() waits for both.
      await limiter.close();
      const debits = stranded.filter((s) => s.kind === "debit")
        .reduce((a, s) => a + (s.amounts["rpm"] ?? 0), 0);
      const tc = num(await rawBucket(client, repo, "k", "api"), "b_rpm_tc");
      assert.ok(timedOut > 0, "no deadline passed: the test proves nothing");
      assert.ok(
        tc <= (admitted + debits) * 1000,
        `stored tc ${tc} > ${
          (admitted + debits) * 1000
        } (admitted ${admitted}, stranded debits ${debits}, timed out ${timedOut}): a write applied twice`,
      );
      assert.ok(
        tc >= admitted * 1000,
        `stored tc ${tc} < admitted ${admitted}`,
      );
    } finally {
      await repo.deleteTable().catch(() => {});
      client.destroy();
    }
  },
});
