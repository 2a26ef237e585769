// Run by plain `node` against the packed npm package (tests/integration/npm_package_test.ts):
// node smoke.mjs TABLE, with ZAEL_TEST_ENDPOINT set to a DynamoDB Local.
import process from "node:process";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import {
  CLIENT_VERSION,
  Limit,
  RateLimiter,
  RateLimitExceeded,
  Repository,
} from "@zae/limiter";

const [stack] = process.argv.slice(2);
const client = new DynamoDBClient({
  endpoint: process.env.ZAEL_TEST_ENDPOINT,
  region: "us-east-1",
  credentials: { accessKeyId: "local", secretAccessKey: "local" },
});
try {
  const repo = await Repository.open({ client, stack, provision: true });
  await repo.setSystemDefaults([Limit.perMinute("rpm", 2)]);
  const limiter = new RateLimiter(repo);
  const results = [];
  for (let i = 0; i < 3; i++) {
    try {
      const answer = await limiter.acquire(
        { entityId: "node-user", resource: "api", consume: { rpm: 1 } },
        async (lease) => {
          await Promise.resolve();
          return lease.unchecked ? "unchecked" : "admitted";
        },
      );
      results.push(answer);
    } catch (e) {
      if (!(e instanceof RateLimitExceeded)) throw e;
      results.push(`rejected, Retry-After ${e.retryAfterHeader}`);
    }
  }
  const available = await limiter.available({
    entityId: "node-user",
    resource: "api",
  });
  process.stdout.write(
    JSON.stringify({ client: CLIENT_VERSION, results, available }) + "\n",
  );
} finally {
  client.destroy();
}
