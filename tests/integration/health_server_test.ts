import assert from "node:assert/strict";
import { createStreamWorkerMetrics } from "../../workers/metrics.ts";
import {
  type HealthCheckResult,
  PROMETHEUS_CONTENT_TYPE,
  renderPrometheus,
  startHealthServer,
} from "../../workers/observability.ts";

const HOST = "127.0.0.1";

/** Fetches `path` and reads the whole body, so no response stays open. */
async function get(
  port: number,
  path: string,
  init: RequestInit = {},
): Promise<{ status: number; type: string | null; body: string }> {
  const res = await fetch(`http://${HOST}:${port}${path}`, init);
  return {
    status: res.status,
    type: res.headers.get("content-type"),
    body: await res.text(),
  };
}

Deno.test("startHealthServer() serves /livez, /readyz and /metrics on an ephemeral port", async () => {
  let ready: HealthCheckResult = {
    ok: false,
    reason: "shard graph not loaded",
  };
  const metrics = { ...createStreamWorkerMetrics(), recordsRead: 5 };
  let listened: { hostname: string; port: number } | undefined;
  const server = startHealthServer({
    port: 0,
    hostname: HOST,
    livez: () => ({ ok: true }),
    readyz: () => ready,
    metrics: () => renderPrometheus({ metrics, workerId: "w1", version: "t" }),
    onListen: (addr) => {
      listened = addr;
    },
  });
  try {
    assert.ok(server.port > 0);
    assert.deepEqual(listened, { hostname: HOST, port: server.port });

    const live = await get(server.port, "/livez");
    assert.equal(live.status, 200);
    assert.equal(live.body, "ok");

    const notReady = await get(server.port, "/readyz");
    assert.equal(notReady.status, 503);
    assert.equal(notReady.body, "shard graph not loaded");
    assert.match(notReady.type ?? "", /^text\/plain/);

    ready = { ok: true };
    const nowReady = await get(server.port, "/readyz?verbose=1");
    assert.equal(nowReady.status, 200);
    assert.equal(nowReady.body, "ok");

    const scrape = await get(server.port, "/metrics");
    assert.equal(scrape.status, 200);
    assert.equal(scrape.type, PROMETHEUS_CONTENT_TYPE);
    assert.equal(scrape.type, "text/plain; version=0.0.4; charset=utf-8");
    assert.match(scrape.body, /^zae_stream_records_read_total 5$/m);
    assert.match(
      scrape.body,
      /^zae_worker_info\{worker_id="w1",version="t"\} 1$/m,
    );
  } finally {
    await server.shutdown();
  }
});

Deno.test("startHealthServer() answers 404 for unknown paths and 405 for other methods", async () => {
  const server = startHealthServer({
    port: 0,
    hostname: HOST,
    livez: () => ({ ok: true }),
    readyz: () => ({ ok: true }),
    metrics: () => "",
  });
  try {
    assert.equal((await get(server.port, "/")).status, 404);
    assert.equal((await get(server.port, "/healthz")).status, 404);
    assert.equal((await get(server.port, "/livez/")).status, 404);

    const post = await fetch(`http://${HOST}:${server.port}/livez`, {
      method: "POST",
      body: "x",
    });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get("allow"), "GET");
    await post.body?.cancel();

    assert.equal(
      (await get(server.port, "/metrics", { method: "DELETE" })).status,
      405,
    );
  } finally {
    await server.shutdown();
  }
});

Deno.test("startHealthServer() answers 503 when a check fails without a reason or throws", async () => {
  const server = startHealthServer({
    port: 0,
    hostname: HOST,
    livez: () => {
      throw new Error("event loop stalled");
    },
    readyz: () => ({ ok: false }),
    metrics: () => {
      throw new Error("no metrics");
    },
  });
  try {
    const live = await get(server.port, "/livez");
    assert.equal(live.status, 503);
    assert.match(live.body, /event loop stalled/);
    const ready = await get(server.port, "/readyz");
    assert.equal(ready.status, 503);
    assert.ok(ready.body.length > 0);
    assert.equal((await get(server.port, "/metrics")).status, 500);
  } finally {
    await server.shutdown();
  }
});

Deno.test("startHealthServer() stops on shutdown(), idempotently", async () => {
  const server = startHealthServer({
    port: 0,
    hostname: HOST,
    livez: () => ({ ok: true }),
    readyz: () => ({ ok: true }),
    metrics: () => "",
  });
  assert.equal((await get(server.port, "/livez")).status, 200);
  await Promise.all([server.shutdown(), server.shutdown()]);
  await server.shutdown();
  await assert.rejects(get(server.port, "/livez"), TypeError);
});

Deno.test("startHealthServer() stops when its signal aborts", async () => {
  const controller = new AbortController();
  const server = startHealthServer({
    port: 0,
    hostname: HOST,
    livez: () => ({ ok: true }),
    readyz: () => ({ ok: true }),
    metrics: () => "",
    signal: controller.signal,
  });
  assert.equal((await get(server.port, "/readyz")).status, 200);
  controller.abort();
  await server.shutdown(); // waits for the shutdown the abort started
  await assert.rejects(get(server.port, "/readyz"), TypeError);
});

Deno.test("startHealthServer() rejects an invalid port", () => {
  for (const port of [-1, 65536, 1.5, NaN]) {
    assert.throws(
      () =>
        startHealthServer({
          port,
          livez: () => ({ ok: true }),
          readyz: () => ({ ok: true }),
          metrics: () => "",
        }),
      { name: "RangeError" },
    );
  }
});
