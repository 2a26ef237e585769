/**
 * The directory archive sink on the real file system (no DynamoDB needed):
 * `deno test --allow-read --allow-write --allow-env tests/integration/archiver_sink_test.ts`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  ARCHIVE_CONTENT_ENCODING,
  ARCHIVE_CONTENT_TYPE,
  type ArchiveObject,
  createArchiverWorkload,
  createDirectoryArchiveSink,
} from "../../workers/archiver.ts";
import type { HandlerContext } from "../../workers/batch_processor.ts";
import type { StreamRecord } from "../../workers/stream_source.ts";

function audit(
  seq: string,
  options: { pk?: string; timestamp?: string } = {},
): StreamRecord {
  const pk = options.pk ?? "ns1/AUDIT#user-1";
  const sk = `#AUDIT#01HQ${seq.padStart(22, "0")}`;
  return {
    eventId: `ev-${seq}`,
    eventName: "REMOVE",
    sequenceNumber: seq,
    approximateCreationTime: Date.UTC(2024, 0, 20),
    sizeBytes: 200,
    keys: { PK: { S: pk }, SK: { S: sk } },
    oldImage: {
      PK: { S: pk },
      SK: { S: sk },
      "event_id": { S: sk.slice("#AUDIT#".length) },
      "entity_id": { S: "user-1" },
      action: { S: "entity_deleted" },
      timestamp: { S: options.timestamp ?? "2024-01-15T14:30:00Z" },
      principal: { S: "alice" },
      details: { M: { reason: { S: "ttl" } } },
    },
    userIdentity: { type: "Service", principalId: "dynamodb.amazonaws.com" },
  };
}

function ctx(signal = new AbortController().signal): HandlerContext {
  return { signal, shardId: "shardId-0001", leaseEpoch: 1, attempt: 1 };
}

function object(key: string, text: string): ArchiveObject {
  return {
    key,
    body: new TextEncoder().encode(text),
    contentType: ARCHIVE_CONTENT_TYPE,
    contentEncoding: ARCHIVE_CONTENT_ENCODING,
  };
}

/** Every file under `dir`, as sorted `/`-separated relative paths. */
async function listFiles(dir: string, base = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(`${dir}/${base}`)) {
    const path = base === "" ? entry.name : `${base}/${entry.name}`;
    if (entry.isDirectory) out.push(...await listFiles(dir, path));
    else out.push(path);
  }
  return out.sort();
}

async function gunzipLines(path: string): Promise<Record<string, unknown>[]> {
  const bytes = await Deno.readFile(path);
  const text = await new Response(
    new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip")),
  ).text();
  assert.ok(text.endsWith("\n"));
  return text.slice(0, -1).split("\n").map((line) => JSON.parse(line));
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "zae_archiver_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("createDirectoryArchiveSink() stores the archiver's objects as decodable files at their keys", async () => {
  await withTempDir(async (dir) => {
    const workload = createArchiverWorkload({
      sink: createDirectoryArchiveSink(dir),
      prefix: "zae/",
    });
    await workload.handle([
      audit("101", { timestamp: "2024-01-15T23:59:59Z" }),
      audit("102", { timestamp: "2024-01-16T00:00:00Z" }),
      audit("103", { timestamp: "2024-01-15T08:00:00Z" }),
      audit("104", { pk: "AUDIT#user-1" }),
    ], ctx());
    assert.deepEqual(await listFiles(dir), [
      "zae/audit/legacy/year=2024/month=01/day=15/audit-shardId-0001-104.jsonl.gz",
      "zae/audit/year=2024/month=01/day=15/audit-shardId-0001-101.jsonl.gz",
      "zae/audit/year=2024/month=01/day=16/audit-shardId-0001-102.jsonl.gz",
    ]);
    const day15 = await gunzipLines(
      `${dir}/zae/audit/year=2024/month=01/day=15/audit-shardId-0001-101.jsonl.gz`,
    );
    assert.deepEqual(day15.map((r) => r["sequence_number"]), ["101", "103"]);
    assert.deepEqual(day15[0], {
      "event_id": "01HQ0000000000000000000101",
      "entity_id": "user-1",
      action: "entity_deleted",
      timestamp: "2024-01-15T23:59:59Z",
      principal: "alice",
      resource: null,
      details: { reason: "ttl" },
      "namespace_id": "ns1",
      legacy: false,
      "stream_event_id": "ev-101",
      "sequence_number": "101",
    });
    const [legacy] = await gunzipLines(
      `${dir}/zae/audit/legacy/year=2024/month=01/day=15/audit-shardId-0001-104.jsonl.gz`,
    );
    assert.equal(legacy?.["namespace_id"], null);
    assert.equal(legacy?.["legacy"], true);
    assert.equal(workload.counters()["archiver_objects_written_total"], 3);
  });
});

Deno.test("createDirectoryArchiveSink() overwrites a key put twice and leaves no temporary file", async () => {
  await withTempDir(async (dir) => {
    const sink = createDirectoryArchiveSink(`${dir}/`);
    await sink.put(object("audit/day=1/a.jsonl.gz", "first version\n"));
    await sink.put(object("audit/day=1/a.jsonl.gz", "second\n"));
    assert.deepEqual(await listFiles(dir), ["audit/day=1/a.jsonl.gz"]);
    assert.equal(
      await Deno.readTextFile(`${dir}/audit/day=1/a.jsonl.gz`),
      "second\n",
    );
    assert.equal(sink.describe(), `directory ${dir}`);
  });
});

Deno.test("createDirectoryArchiveSink() gives one file per object when the archiver retries a batch", async () => {
  await withTempDir(async (dir) => {
    const workload = createArchiverWorkload({
      sink: createDirectoryArchiveSink(dir),
    });
    const batch = [
      audit("201", { timestamp: "2024-01-15T12:00:00Z" }),
      audit("202", { timestamp: "2024-01-16T12:00:00Z" }),
    ];
    await workload.handle(batch, ctx());
    const files = await listFiles(dir);
    const bytes = await Promise.all(
      files.map((f) => Deno.readFile(`${dir}/${f}`)),
    );
    await workload.handle(batch, ctx());
    assert.deepEqual(await listFiles(dir), files);
    assert.equal(files.length, 2);
    for (const [i, f] of files.entries()) {
      assert.deepEqual(await Deno.readFile(`${dir}/${f}`), bytes[i]);
    }
  });
});

Deno.test("createDirectoryArchiveSink() keeps one complete file under concurrent puts of a key", async () => {
  await withTempDir(async (dir) => {
    const sink = createDirectoryArchiveSink(dir);
    const bodies = Array.from(
      { length: 8 },
      (_, i) => `${String(i).repeat(10_000)}\n`,
    );
    await Promise.all(bodies.map((b) => sink.put(object("audit/k.jsonl", b))));
    assert.deepEqual(await listFiles(dir), ["audit/k.jsonl"]);
    assert.ok(bodies.includes(await Deno.readTextFile(`${dir}/audit/k.jsonl`)));
  });
});

Deno.test("createDirectoryArchiveSink() rejects keys that are not relative paths inside the directory", async () => {
  await withTempDir(async (dir) => {
    const sink = createDirectoryArchiveSink(`${dir}/inner`);
    for (
      const key of [
        "",
        "../escape.jsonl.gz",
        "audit/../../escape.jsonl.gz",
        "/abs.jsonl.gz",
        "audit//a.jsonl.gz",
        "audit/./a.jsonl.gz",
        "audit/",
        "audit\\..\\a.jsonl.gz",
      ]
    ) {
      await assert.rejects(sink.put(object(key, "x\n")), { name: "TypeError" });
    }
    assert.deepEqual(await listFiles(dir), []);
  });
});

Deno.test("createDirectoryArchiveSink() removes its temporary file when the rename fails", async () => {
  await withTempDir(async (dir) => {
    await Deno.mkdir(`${dir}/audit/taken.jsonl.gz/child`, { recursive: true });
    const sink = createDirectoryArchiveSink(dir);
    await assert.rejects(sink.put(object("audit/taken.jsonl.gz", "x\n")));
    const names: string[] = [];
    for await (const e of Deno.readDir(`${dir}/audit`)) names.push(e.name);
    assert.deepEqual(names, ["taken.jsonl.gz"]);
  });
});

Deno.test("createDirectoryArchiveSink() writes nothing once the signal is aborted", async () => {
  await withTempDir(async (dir) => {
    const sink = createDirectoryArchiveSink(dir);
    const controller = new AbortController();
    controller.abort(new Error("shutdown"));
    await assert.rejects(
      sink.put(object("audit/a.jsonl.gz", "x\n"), controller.signal),
      { message: "shutdown" },
    );
    assert.deepEqual(await listFiles(dir), []);
  });
});

Deno.test("createDirectoryArchiveSink() throws TypeError for an empty directory name", () => {
  assert.throws(() => createDirectoryArchiveSink(""), { name: "TypeError" });
});
