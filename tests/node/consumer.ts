// A TypeScript consumer of the npm package, type-checked by `tsc` with
// skipLibCheck off in a scratch Node project (tests/integration/npm_package_test.ts).
import type { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import {
  type AcquireOptions,
  type Lease,
  Limit,
  RateLimiter,
  RateLimitExceeded,
  Repository,
} from "@zae/limiter";

export async function handle(client: DynamoDBClient): Promise<number> {
  const repo: Repository = await Repository.open({ client, stack: "app" });
  const limiter = new RateLimiter(repo, { timeoutMs: 2000 });
  await repo.setSystemDefaults([Limit.perMinute("rpm", 60)]);
  const request: AcquireOptions = {
    entityId: "key-1",
    resource: "api",
    consume: { rpm: 1 },
    onUnavailable: "block",
  };
  try {
    return await limiter.acquire(request, (lease: Lease) => {
      lease.adjust({ rpm: 0 });
      return 200;
    });
  } catch (e) {
    if (e instanceof RateLimitExceeded) {
      return e.retryAfterSeconds > 0 ? 429 : 503;
    }
    throw e;
  }
}
