import assert from "node:assert/strict";
import { VirtualClock } from "../tests/_fakes/virtual_clock.ts";
import { callWithDeadline } from "./_util.ts";
import { classifyFailure, StreamWorkerError } from "./errors.ts";
import { type DependencyEvent, DependencyHealth } from "./resilience.ts";

const refused = (): Error =>
  Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });

Deno.test("classifyFailure() retries what got no answer or a throttle and gives up only on refusals no retry fixes", () => {
  const sdk = (name: string, status: number, extra = {}) =>
    Object.assign(new Error(name), {
      name,
      $metadata: { httpStatusCode: status },
      ...extra,
    });
  assert.equal(classifyFailure(refused()), "unreachable");
  assert.equal(
    classifyFailure(
      Object.assign(new Error("aborted"), { name: "AbortError" }),
    ),
    "unreachable",
  );
  assert.equal(classifyFailure(sdk("InternalServerError", 500)), "unreachable");
  assert.equal(classifyFailure(sdk("ServiceUnavailable", 503)), "unreachable");
  assert.equal(
    classifyFailure(sdk("ThrottlingException", 400)),
    "throttled",
  );
  assert.equal(
    classifyFailure(sdk("TransactionConflictException", 400)),
    "throttled",
  );
  assert.equal(
    classifyFailure(sdk("ExpiredTokenException", 400)),
    "unreachable",
  );
  assert.equal(classifyFailure(sdk("AccessDeniedException", 400)), "fatal");
  assert.equal(classifyFailure(sdk("ResourceNotFoundException", 400)), "fatal");
  assert.equal(classifyFailure(new RangeError("bug")), "fatal");
  assert.equal(
    classifyFailure(
      new StreamWorkerError("DEPENDENCY_TIMEOUT", "late", { retryable: true }),
    ),
    "unreachable",
  );
  assert.equal(
    classifyFailure(new StreamWorkerError("STREAM_NOT_FOUND", "no stream")),
    "fatal",
  );
});

Deno.test("callWithDeadline() rejects with a retryable timeout when the call never answers, and passes answers through", async () => {
  const clock = new VirtualClock();
  const hung = callWithDeadline(
    clock,
    5_000,
    undefined,
    "renew lease",
    () => new Promise<never>(() => {}),
  );
  const seen: unknown[] = [];
  hung.catch((e) => seen.push(e));
  await clock.advance(4_999);
  assert.equal(seen.length, 0);
  await clock.advance(1);
  const settled = seen[0];
  assert.ok(settled instanceof StreamWorkerError);
  assert.equal(settled.code, "DEPENDENCY_TIMEOUT");
  assert.equal(classifyFailure(settled), "unreachable");
  assert.match(settled.message, /Cannot renew lease: no answer within 5000 ms/);
  assert.equal(clock.pendingTimers, 0);

  const ok = await callWithDeadline(
    clock,
    5_000,
    undefined,
    "x",
    () => Promise.resolve(42),
  );
  assert.equal(ok, 42);
  assert.equal(clock.pendingTimers, 0, "no timer left behind");

  const outer = new AbortController();
  const cancelled = callWithDeadline(
    clock,
    5_000,
    outer.signal,
    "x",
    () => new Promise<never>(() => {}),
  );
  outer.abort(new Error("shutdown"));
  await assert.rejects(cancelled, { message: "shutdown" });
});

Deno.test("DependencyHealth declares one outage after outageAfterMs of failures, ends it on the next answer, and counts errors by operation", () => {
  let now = 0;
  const events: DependencyEvent[] = [];
  const health = new DependencyHealth({
    clock: { now: () => now, sleep: () => Promise.resolve() },
    outageAfterMs: 5_000,
    onEvent: (e) => events.push(e),
  });
  health.failure("dynamodb", "commit", refused());
  now = 2_000;
  health.failure("dynamodb", "renew_lease", refused());
  assert.deepEqual(health.outages(), [], "a short streak is no outage");
  now = 5_000;
  assert.equal(health.outages()[0]?.dependency, "dynamodb");
  now = 6_000;
  for (let i = 0; i < 5; i++) health.failure("dynamodb", "commit", refused());
  assert.equal(
    events.filter((e) => e.kind === "outage_started").length,
    1,
    "one start, however many failures",
  );
  assert.equal(
    events.filter((e) => e.kind === "call_failed").length,
    1,
    "one warning per streak",
  );
  // A throttle is an answer: the service is reachable again.
  now = 9_000;
  health.failure(
    "dynamodb",
    "commit",
    Object.assign(new Error("slow"), { name: "ThrottlingException" }),
  );
  const ended = events.find((e) => e.kind === "outage_ended");
  assert.deepEqual(
    ended?.kind === "outage_ended"
      ? [ended.since, ended.until, ended.durationMs, ended.failedCalls]
      : [],
    [0, 9_000, 9_000, 7],
  );
  assert.deepEqual(health.outages(), []);
  assert.deepEqual(
    health.errors().map((e) => [e.dependency, e.operation, e.count]),
    [["dynamodb", "commit", 7], ["dynamodb", "renew_lease", 1]],
  );
  // Streams are tracked on their own.
  health.failure("streams", "get_records", refused());
  now = 20_000;
  assert.deepEqual(health.outages().map((o) => o.dependency), ["streams"]);
});
