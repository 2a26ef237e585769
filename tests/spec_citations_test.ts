/**
 * Every "spec NN §x" and "weakness N" cited in a comment resolves inside
 * docs/spec/ (docs/README.md says how to read a citation).
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);
const SCANNED = [
  "core",
  "workers",
  "migrations",
  "cli",
  "infra",
  "dev",
  "tests",
];
const SCANNED_FILES = ["mod.ts", "cli.ts", "testing.ts"];

interface SpecFile {
  readonly name: string;
  readonly sections: ReadonlySet<string>;
}

async function readSpec(): Promise<Map<string, SpecFile>> {
  const out = new Map<string, SpecFile>();
  for await (const entry of Deno.readDir(new URL("docs/spec/", ROOT))) {
    const m = /^(\d{2})-.*\.md$/.exec(entry.name);
    if (!m?.[1]) continue;
    const text = await Deno.readTextFile(
      new URL(`docs/spec/${entry.name}`, ROOT),
    );
    const sections = new Set<string>();
    for (const h of text.matchAll(/^#+\s+(\d+(?:\.\d+)*)\.?\s/gm)) {
      sections.add(h[1] as string);
    }
    out.set(m[1], { name: entry.name, sections });
  }
  return out;
}

/** The numbers of "Known weaknesses of the reference" in 00-overview.md. */
async function readWeaknesses(): Promise<Set<number>> {
  const text = await Deno.readTextFile(
    new URL("docs/spec/00-overview.md", ROOT),
  );
  const start = text.indexOf("## 5. Known weaknesses of the reference");
  assert.ok(start >= 0, "00-overview.md has its weaknesses section");
  const end = text.indexOf("\n## ", start + 1);
  const body = text.slice(start, end < 0 ? undefined : end);
  return new Set(
    [...body.matchAll(/^(\d+)\. /gm)].map((m) => Number(m[1])),
  );
}

async function* sourceFiles(dir: URL, path: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(dir)) {
    const rel = `${path}/${entry.name}`;
    if (entry.isDirectory) {
      yield* sourceFiles(new URL(`${entry.name}/`, dir), rel);
    } else if (entry.isFile && entry.name.endsWith(".ts")) {
      yield rel;
    }
  }
}

async function allSources(): Promise<string[]> {
  const out: string[] = [];
  for (const dir of SCANNED) {
    for await (const f of sourceFiles(new URL(`${dir}/`, ROOT), dir)) {
      out.push(f);
    }
  }
  for (const f of SCANNED_FILES) {
    try {
      await Deno.stat(new URL(f, ROOT));
      out.push(f);
    } catch {
      // not in this checkout
    }
  }
  return out.sort();
}

Deno.test("every spec citation in the code names a file and a heading under docs/spec/", async () => {
  const spec = await readSpec();
  const unresolved: string[] = [];
  let cited = 0;
  for (const path of await allSources()) {
    const text = await Deno.readTextFile(new URL(path, ROOT));
    const citations = [
      ...text.matchAll(/\bspec (\d{2})\b(?: ?§ ?(\d+(?:\.\d+)*))?/g),
      ...text.matchAll(/(?<!spec )(?<![\d.])\b(\d{2}) ?§ ?(\d+(?:\.\d+)*)/g),
    ];
    for (const [whole, file, section] of citations) {
      cited++;
      const target = spec.get(file as string);
      if (target === undefined) {
        unresolved.push(`${path}: "${whole}" (no docs/spec/${file}-*.md)`);
      } else if (section !== undefined && !target.sections.has(section)) {
        unresolved.push(
          `${path}: "${whole}" (no §${section} in ${target.name})`,
        );
      }
    }
  }
  assert.ok(cited > 0, "the scan found citations");
  assert.deepEqual(unresolved, []);
});

Deno.test("every weakness cited in the code is a numbered weakness of docs/spec/00-overview.md", async () => {
  const known = await readWeaknesses();
  assert.ok(known.size > 0);
  const unresolved: string[] = [];
  for (const path of await allSources()) {
    const text = await Deno.readTextFile(new URL(path, ROOT));
    for (const m of text.matchAll(/\bweakness(?:es)? #?(\d+)/g)) {
      if (!known.has(Number(m[1]))) unresolved.push(`${path}: "${m[0]}"`);
    }
  }
  assert.deepEqual(unresolved, []);
});
