/**
 * The limits manifest (spec 05 §6, the reference's provisioner format): a
 * YAML file that declares the system, resource and entity limits of one
 * namespace. Parsing checks the whole file against the schema and reports
 * every problem with its line and column; rendering writes a
 * {@linkcode LimitsState} back as a manifest (`limits export`).
 *
 * ```yaml
 * namespace: default            # optional: -N when absent
 * system:
 *   on_unavailable: block       # allow | block (optional)
 *   limits:
 *     rpm: {capacity: 1000}     # refill_amount = capacity, refill_period = 60 s
 * resources:
 *   openai/gpt-4:
 *     limits:
 *       tpm: {capacity: 100000, burst: 150000}
 * entities:
 *   key-1:
 *     resources:
 *       _default_:              # every resource of the entity
 *         limits:
 *           rpm: 100/min        # or the -l grammar: rate[/period][:burst]
 * ```
 *
 * @module
 */
import {
  Document,
  isMap,
  isPair,
  isScalar,
  LineCounter,
  type Node as YamlNode,
  parseDocument,
  type Scalar,
  type YAMLMap,
} from "yaml";
import { Limit, type OnUnavailable, ValidationError } from "../mod.ts";
import { DEFAULT_RESOURCE } from "../core/keys.ts";
import {
  validateIdentifier,
  validateLimitName,
  validateNamespaceName,
  validateResource,
} from "../core/validation.ts";
import { safeParseLimitSpec } from "./limit_spec.ts";

/** Limits of one target, by limit name. */
export type LimitSet = ReadonlyMap<string, Limit>;

/** System-level settings of a namespace. */
export interface SystemLimits {
  /** The system default limits (may be empty when only `onUnavailable` is set). */
  readonly limits: LimitSet;
  /** Behaviour when DynamoDB fails, or `null` when not set. */
  readonly onUnavailable: OnUnavailable | null;
}

/** The limits of one namespace, as declared or as read from the table. */
export interface LimitsState {
  /** The namespace name. */
  readonly namespace: string;
  /** System defaults, or `null`. */
  readonly system: SystemLimits | null;
  /** Resource defaults by resource. */
  readonly resources: ReadonlyMap<string, LimitSet>;
  /** Entity limits: entity id, then resource (`_default_`: every resource). */
  readonly entities: ReadonlyMap<string, ReadonlyMap<string, LimitSet>>;
}

/** Stable codes of manifest problems. */
export const MANIFEST_ISSUE_CODES = [
  "YAML_SYNTAX",
  "NOT_A_MAPPING",
  "UNKNOWN_KEY",
  "MISSING_KEY",
  "WRONG_TYPE",
  "INVALID_VALUE",
  "EMPTY",
] as const;
/** One of {@linkcode MANIFEST_ISSUE_CODES}. */
export type ManifestIssueCode = typeof MANIFEST_ISSUE_CODES[number];

/** One problem of a manifest, with its position. */
export interface ManifestIssue {
  /** Stable code. */
  readonly code: ManifestIssueCode;
  /** Dotted path of the offending key (`resources.gpt.limits.rpm.capacity`); empty for the document. */
  readonly path: string;
  /** 1-based line. */
  readonly line: number;
  /** 1-based column. */
  readonly column: number;
  /** What is wrong and what to do. */
  readonly message: string;
  /** The source line, for display. */
  readonly sourceLine: string;
}

/** A manifest that does not follow the schema; lists every problem. */
export class LimitsManifestError extends SyntaxError {
  /** The file name used in messages. */
  readonly fileName: string;
  /** Every problem found, in file order. */
  readonly issues: readonly ManifestIssue[];
  /** Line of the first problem. */
  readonly line: number;
  /** Column of the first problem. */
  readonly column: number;
  /** Creates the error; the message lists every issue as `file:line:col: path: message`. */
  constructor(fileName: string, issues: readonly ManifestIssue[]) {
    super(
      `Cannot read limits manifest "${fileName}": ${issues.length} problem(s)\n${
        issues.map((i) => formatIssue(fileName, i)).join("\n")
      }`,
    );
    this.name = "LimitsManifestError";
    this.fileName = fileName;
    this.issues = issues;
    this.line = issues[0]?.line ?? 0;
    this.column = issues[0]?.column ?? 0;
  }
}

/** `file:line:col: path: message`, then the source line with a caret under the column. */
export function formatIssue(fileName: string, issue: ManifestIssue): string {
  const where = `${fileName}:${issue.line}:${issue.column}`;
  const head = `${where}: ${
    issue.path ? `${issue.path}: ` : ""
  }${issue.message}`;
  if (!issue.sourceLine.trim()) return head;
  const gutter = String(issue.line).padStart(5);
  return `${head}\n${gutter} | ${issue.sourceLine}\n${
    " ".repeat(gutter.length)
  } | ${" ".repeat(Math.max(0, issue.column - 1))}^`;
}

/** Result of {@linkcode safeParseLimitsManifest}. */
export type ManifestResult =
  | { readonly ok: true; readonly value: ParsedManifest }
  | { readonly ok: false; readonly issues: readonly ManifestIssue[] };

/** A manifest after validation. */
export interface ParsedManifest {
  /** The `namespace` key, or `null` when absent. */
  readonly namespace: string | null;
  /** Line of the `namespace` key (for messages), or `null`. */
  readonly namespaceLine: number | null;
  /** The declared limits (namespace filled in by the caller). */
  readonly system: SystemLimits | null;
  /** Resource defaults. */
  readonly resources: ReadonlyMap<string, LimitSet>;
  /** Entity limits. */
  readonly entities: ReadonlyMap<string, ReadonlyMap<string, LimitSet>>;
}

const TOP_KEYS = ["namespace", "system", "resources", "entities"] as const;
const SYSTEM_KEYS = ["on_unavailable", "limits"] as const;
const DECL_KEYS = [
  "capacity",
  "refill_amount",
  "refill_period",
  "burst",
] as const;

function distance(a: string, b: string): number {
  const d = Array.from(
    { length: a.length + 1 },
    (_, i) => [i, ...Array<number>(b.length).fill(0)],
  );
  for (let j = 1; j <= b.length; j++) (d[0] as number[])[j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const row = d[i] as number[];
      const prev = d[i - 1] as number[];
      row[j] = Math.min(
        (prev[j] as number) + 1,
        (row[j - 1] as number) + 1,
        (prev[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
  }
  return (d[a.length] as number[])[b.length] as number;
}

function suggestion(key: string, allowed: readonly string[]): string {
  const best = allowed.map((k) => [k, distance(key, k)] as const)
    .sort((x, y) => x[1] - y[1])[0];
  return best && best[1] <= 2 ? ` (did you mean "${best[0]}"?)` : "";
}

function pathJoin(base: string, key: string): string {
  const k = /^[A-Za-z0-9_\-]+$/.test(key) ? key : JSON.stringify(key);
  return base ? `${base}.${k}` : k;
}

function describe(node: unknown): string {
  if (isMap(node)) return "a mapping";
  if (node && typeof node === "object" && "items" in node) return "a list";
  if (isScalar(node)) {
    const v = node.value;
    if (v === null) return "nothing (null)";
    if (typeof v === "string") return `the text ${JSON.stringify(v)}`;
    return String(v);
  }
  return "nothing";
}

class Checker {
  readonly issues: ManifestIssue[] = [];
  readonly #lines: string[];
  readonly #counter: LineCounter;

  constructor(text: string, counter: LineCounter) {
    this.#lines = text.split(/\r?\n/);
    this.#counter = counter;
  }

  at(offset: number): { line: number; column: number; sourceLine: string } {
    const p = this.#counter.linePos(offset);
    return {
      line: p.line,
      column: p.col,
      sourceLine: this.#lines[p.line - 1] ?? "",
    };
  }

  add(
    code: ManifestIssueCode,
    path: string,
    node: YamlNode | null | undefined,
    fallback: number,
    message: string,
  ): void {
    const offset = node?.range?.[0] ?? fallback;
    this.issues.push({ code, path, message, ...this.at(offset) });
  }

  /** The pairs of a mapping with string keys, or null (issue recorded). */
  entries(
    node: unknown,
    path: string,
    fallback: number,
    what: string,
  ): { key: string; keyNode: Scalar; value: YamlNode | null }[] | null {
    if (!isMap(node)) {
      this.add(
        "WRONG_TYPE",
        path,
        node as YamlNode | null,
        fallback,
        `expected ${what} (a mapping), got ${describe(node)}`,
      );
      return null;
    }
    const out: { key: string; keyNode: Scalar; value: YamlNode | null }[] = [];
    for (const pair of (node as YAMLMap).items) {
      if (!isPair(pair)) continue;
      const k = pair.key;
      if (
        !isScalar(k) || (typeof k.value !== "string" &&
          typeof k.value !== "number")
      ) {
        this.add(
          "WRONG_TYPE",
          path,
          k as YamlNode | null,
          node.range?.[0] ?? fallback,
          "keys must be plain text",
        );
        continue;
      }
      out.push({
        key: String(k.value),
        keyNode: k,
        value: (pair.value ?? null) as YamlNode | null,
      });
    }
    return out;
  }

  unknownKeys(
    entries: { key: string; keyNode: Scalar }[],
    allowed: readonly string[],
    path: string,
  ): void {
    for (const e of entries) {
      if (!allowed.includes(e.key)) {
        this.add(
          "UNKNOWN_KEY",
          pathJoin(path, e.key),
          e.keyNode,
          0,
          `unknown key "${e.key}"${suggestion(e.key, allowed)}; expected ${
            allowed.map((a) => `"${a}"`).join(", ")
          }`,
        );
      }
    }
  }
}

function positiveInt(
  c: Checker,
  node: YamlNode | null,
  path: string,
  fallback: number,
): number | null {
  const v = isScalar(node) ? node.value : undefined;
  if (typeof v === "number" && Number.isSafeInteger(v) && v > 0) return v;
  c.add(
    "INVALID_VALUE",
    path,
    node,
    fallback,
    `expected a positive whole number, got ${describe(node)}`,
  );
  return null;
}

function limitDecl(
  c: Checker,
  name: string,
  node: YamlNode | null,
  path: string,
  fallback: number,
): Limit | null {
  // Shorthand: the -l grammar without the name, `rate[/period][:burst]`.
  if (
    isScalar(node) && (typeof node.value === "string" ||
      typeof node.value === "number")
  ) {
    const r = safeParseLimitSpec(`${name}:${String(node.value)}`);
    if (r.ok) return r.value;
    const m = r.error.message;
    const detail = /Invalid period/.test(m)
      ? "the period must be /[N]sec, /[N]min, /[N]hour or /[N]day"
      : /rate '/.test(m)
      ? "the rate must be a positive whole number"
      : /burst '/.test(m)
      ? "the burst must be a positive whole number"
      : /more than 3 parts/.test(m)
      ? "too many ':'"
      : "";
    c.add(
      "INVALID_VALUE",
      path,
      node,
      fallback,
      `cannot read ${describe(node)} as a limit${
        detail ? ` (${detail})` : ""
      }; write rate[/period][:burst] like "100/min" or "10000/min:15000", or a mapping {capacity, refill_amount, refill_period, burst}`,
    );
    return null;
  }
  const entries = c.entries(node, path, fallback, "a limit");
  if (!entries) return null;
  c.unknownKeys(entries, DECL_KEYS, path);
  const get = (k: string) => entries.find((e) => e.key === k);
  const cap = get("capacity");
  if (!cap) {
    c.add(
      "MISSING_KEY",
      pathJoin(path, "capacity"),
      node,
      fallback,
      'missing "capacity" (whole tokens per refill period, e.g. capacity: 100)',
    );
    return null;
  }
  const num = (k: string): number | null | undefined => {
    const e = get(k);
    return e
      ? positiveInt(c, e.value, pathJoin(path, k), e.keyNode.range?.[0] ?? 0)
      : undefined;
  };
  const capacity = num("capacity");
  const refillAmount = num("refill_amount");
  const refillPeriod = num("refill_period");
  const burst = num("burst");
  if (
    capacity === null || refillAmount === null || refillPeriod === null ||
    burst === null || capacity === undefined
  ) return null;
  try {
    return new Limit(
      name,
      burst ?? capacity,
      refillAmount ?? capacity,
      refillPeriod ?? 60,
    );
  } catch (e) {
    c.add(
      "INVALID_VALUE",
      path,
      node,
      fallback,
      e instanceof ValidationError ? e.reason : String(e),
    );
    return null;
  }
}

function limitsBlock(
  c: Checker,
  node: YamlNode | null,
  path: string,
  fallback: number,
  allowEmpty: boolean,
): Map<string, Limit> | null {
  const entries = c.entries(
    node,
    path,
    fallback,
    "limits by name, e.g. rpm: {capacity: 100}",
  );
  if (!entries) return null;
  if (entries.length === 0 && !allowEmpty) {
    c.add(
      "EMPTY",
      path,
      node,
      fallback,
      "declare at least one limit, or remove the entry (a removed entry is deleted by apply)",
    );
    return null;
  }
  const out = new Map<string, Limit>();
  let ok = true;
  for (const e of entries) {
    const p = pathJoin(path, e.key);
    try {
      validateLimitName(e.key, "limit name");
    } catch (err) {
      c.add(
        "INVALID_VALUE",
        p,
        e.keyNode,
        0,
        `invalid limit name "${e.key}": ${
          err instanceof ValidationError ? err.reason : String(err)
        }`,
      );
      ok = false;
      continue;
    }
    const l = limitDecl(c, e.key, e.value, p, e.keyNode.range?.[0] ?? 0);
    if (l) out.set(l.name, l);
    else ok = false;
  }
  return ok ? out : null;
}

/** A block `{limits: {...}}` (resources and entity resources). */
function limitsHolder(
  c: Checker,
  node: YamlNode | null,
  path: string,
  fallback: number,
): Map<string, Limit> | null {
  const entries = c.entries(node, path, fallback, "{limits: {...}}");
  if (!entries) return null;
  c.unknownKeys(entries, ["limits"], path);
  const l = entries.find((e) => e.key === "limits");
  if (!l) {
    c.add(
      "MISSING_KEY",
      pathJoin(path, "limits"),
      node,
      fallback,
      'missing "limits" (e.g. limits: {rpm: {capacity: 100}})',
    );
    return null;
  }
  return limitsBlock(
    c,
    l.value,
    pathJoin(path, "limits"),
    l.keyNode.range?.[0] ?? 0,
    false,
  );
}

function nameCheck(
  c: Checker,
  e: { key: string; keyNode: Scalar },
  path: string,
  kind: string,
  validate: (v: string) => unknown,
): boolean {
  try {
    validate(e.key);
    return true;
  } catch (err) {
    c.add(
      "INVALID_VALUE",
      path,
      e.keyNode,
      0,
      `invalid ${kind} "${e.key}": ${
        err instanceof ValidationError ? err.reason : String(err)
      }`,
    );
    return false;
  }
}

/**
 * Parses and checks a manifest; never throws. Every problem is reported with
 * its line and column, not only the first.
 *
 * @param text The YAML text.
 * @returns The manifest, or every issue found.
 *
 * @example A typo is reported with its line
 * ```ts
 * import assert from "node:assert/strict";
 * import { safeParseLimitsManifest } from "./limits_manifest.ts";
 *
 * const r = safeParseLimitsManifest("namespace: default\nresouces:\n  gpt:\n    limits: {rpm: {capacity: 10}}\n");
 * assert.equal(r.ok, false);
 * if (!r.ok) {
 *   assert.equal(r.issues[0]?.line, 2);
 *   assert.equal(r.issues[0]?.code, "UNKNOWN_KEY");
 *   assert.match(r.issues[0]?.message ?? "", /did you mean "resources"/);
 * }
 * ```
 */
export function safeParseLimitsManifest(text: string): ManifestResult {
  const counter = new LineCounter();
  const doc = parseDocument(text, {
    lineCounter: counter,
    prettyErrors: false,
    uniqueKeys: true,
  });
  const c = new Checker(text, counter);
  if (doc.errors.length > 0) {
    for (const e of doc.errors) {
      const offset = e.pos[0];
      c.issues.push({
        code: "YAML_SYNTAX",
        path: "",
        message: e.message.split("\n")[0]?.replace(
          / at line \d+, column \d+:?$/,
          "",
        ) ??
          e.message,
        ...c.at(offset),
      });
    }
    return { ok: false, issues: c.issues };
  }
  const root = doc.contents;
  if (!isMap(root)) {
    c.issues.push({
      code: "NOT_A_MAPPING",
      path: "",
      message:
        `expected a mapping with namespace, system, resources and entities, got ${
          describe(root)
        }`,
      ...c.at(root?.range?.[0] ?? 0),
    });
    return { ok: false, issues: c.issues };
  }
  const top = c.entries(root, "", 0, "the manifest") ?? [];
  c.unknownKeys(top, TOP_KEYS, "");
  const get = (k: string) => top.find((e) => e.key === k);

  let namespace: string | null = null;
  let namespaceLine: number | null = null;
  const ns = get("namespace");
  if (ns) {
    const v = isScalar(ns.value) ? ns.value.value : undefined;
    namespaceLine = c.at(ns.keyNode.range?.[0] ?? 0).line;
    try {
      namespace = validateNamespaceName(
        typeof v === "number" ? String(v) : v,
      );
    } catch (err) {
      c.add(
        "INVALID_VALUE",
        "namespace",
        ns.value,
        ns.keyNode.range?.[0] ?? 0,
        `invalid namespace (got ${describe(ns.value)}): ${
          err instanceof ValidationError ? err.reason : String(err)
        }`,
      );
    }
  }

  let system: SystemLimits | null = null;
  const sys = get("system");
  if (sys) {
    const at = sys.keyNode.range?.[0] ?? 0;
    const se = c.entries(sys.value, "system", at, "{on_unavailable, limits}");
    if (se) {
      c.unknownKeys(se, SYSTEM_KEYS, "system");
      let onUnavailable: OnUnavailable | null = null;
      const ou = se.find((e) => e.key === "on_unavailable");
      if (ou) {
        const v = isScalar(ou.value) ? ou.value.value : undefined;
        if (v === "allow" || v === "block") onUnavailable = v;
        else {
          c.add(
            "INVALID_VALUE",
            "system.on_unavailable",
            ou.value,
            ou.keyNode.range?.[0] ?? 0,
            `expected "allow" or "block", got ${describe(ou.value)}`,
          );
        }
      }
      const lim = se.find((e) => e.key === "limits");
      const limits = lim
        ? limitsBlock(
          c,
          lim.value,
          "system.limits",
          lim.keyNode.range?.[0] ?? 0,
          onUnavailable !== null,
        )
        : new Map<string, Limit>();
      if (!lim && !ou) {
        c.add(
          "EMPTY",
          "system",
          sys.value,
          at,
          'give "limits" and/or "on_unavailable", or remove "system"',
        );
      } else if (limits) {
        system = { limits, onUnavailable };
      }
    }
  }

  const resources = new Map<string, LimitSet>();
  const res = get("resources");
  if (res) {
    const entries = c.entries(
      res.value,
      "resources",
      res.keyNode.range?.[0] ?? 0,
      "resources by name",
    );
    for (const e of entries ?? []) {
      const p = pathJoin("resources", e.key);
      if (!nameCheck(c, e, p, "resource name", (v) => validateResource(v))) {
        continue;
      }
      const l = limitsHolder(c, e.value, p, e.keyNode.range?.[0] ?? 0);
      if (l) resources.set(e.key, l);
    }
  }

  const entities = new Map<string, Map<string, LimitSet>>();
  const ent = get("entities");
  if (ent) {
    const entries = c.entries(
      ent.value,
      "entities",
      ent.keyNode.range?.[0] ?? 0,
      "entities by id",
    );
    for (const e of entries ?? []) {
      const p = pathJoin("entities", e.key);
      if (!nameCheck(c, e, p, "entity id", (v) => validateIdentifier(v))) {
        continue;
      }
      const ee = c.entries(
        e.value,
        p,
        e.keyNode.range?.[0] ?? 0,
        "{resources: {...}}",
      );
      if (!ee) continue;
      c.unknownKeys(ee, ["resources"], p);
      const rs = ee.find((x) => x.key === "resources");
      if (!rs) {
        c.add(
          "MISSING_KEY",
          pathJoin(p, "resources"),
          e.value,
          e.keyNode.range?.[0] ?? 0,
          `missing "resources" (use "${DEFAULT_RESOURCE}" for limits on every resource)`,
        );
        continue;
      }
      const rp = pathJoin(p, "resources");
      const rentries = c.entries(
        rs.value,
        rp,
        rs.keyNode.range?.[0] ?? 0,
        "resources by name",
      );
      if (!rentries) continue;
      if (rentries.length === 0) {
        c.add(
          "EMPTY",
          rp,
          rs.value,
          rs.keyNode.range?.[0] ?? 0,
          "declare at least one resource, or remove the entity",
        );
        continue;
      }
      const byResource = new Map<string, LimitSet>();
      for (const r of rentries) {
        const p2 = pathJoin(rp, r.key);
        if (
          r.key !== DEFAULT_RESOURCE &&
          !nameCheck(c, r, p2, "resource name", (v) => validateResource(v))
        ) continue;
        const l = limitsHolder(c, r.value, p2, r.keyNode.range?.[0] ?? 0);
        if (l) byResource.set(r.key, l);
      }
      entities.set(e.key, byResource);
    }
  }

  if (c.issues.length > 0) {
    const sorted = [...c.issues].sort((a, b) =>
      a.line - b.line || a.column - b.column
    );
    return { ok: false, issues: sorted };
  }
  return {
    ok: true,
    value: { namespace, namespaceLine, system, resources, entities },
  };
}

/**
 * Throwing form of {@linkcode safeParseLimitsManifest}.
 *
 * @param text The YAML text.
 * @param fileName Name used in messages.
 * @returns The manifest.
 * @throws {LimitsManifestError} listing every problem with its line
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseLimitsManifest } from "./limits_manifest.ts";
 *
 * const m = parseLimitsManifest("resources:\n  gpt:\n    limits:\n      rpm: 100/min\n", "limits.yaml");
 * assert.equal(m.resources.get("gpt")?.get("rpm")?.capacity, 100);
 * assert.throws(() => parseLimitsManifest("system: {limits: {rpm: {capacity: -1}}}\n", "limits.yaml"), {
 *   name: "LimitsManifestError",
 *   message: /limits\.yaml:1:35: system\.limits\.rpm\.capacity: expected a positive whole number/,
 * });
 * ```
 */
export function parseLimitsManifest(
  text: string,
  fileName: string,
): ParsedManifest {
  const r = safeParseLimitsManifest(text);
  if (!r.ok) throw new LimitsManifestError(fileName, r.issues);
  return r.value;
}

function declOf(l: Limit): Record<string, number> {
  return {
    capacity: l.capacity,
    "refill_amount": l.refillAmount,
    "refill_period": l.refillPeriodSeconds,
  };
}

function sortedEntries<V>(m: ReadonlyMap<string, V>): [string, V][] {
  return [...m.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

function limitsObject(set: LimitSet): Record<string, unknown> {
  return Object.fromEntries(sortedEntries(set).map(([n, l]) => [n, declOf(l)]));
}

/**
 * Renders a state as a manifest, keys sorted, each limit as
 * `{capacity, refill_amount, refill_period}` on one line. Parsing the result
 * gives the same state.
 *
 * @param state The limits to write.
 * @param header Comment lines for the top of the file.
 * @returns YAML text.
 *
 * @example Round trip
 * ```ts
 * import assert from "node:assert/strict";
 * import { Limit } from "../mod.ts";
 * import { parseLimitsManifest, renderLimitsManifest } from "./limits_manifest.ts";
 *
 * const text = renderLimitsManifest({
 *   namespace: "default",
 *   system: { limits: new Map([["rpm", Limit.perMinute("rpm", 100)]]), onUnavailable: "block" },
 *   resources: new Map(),
 *   entities: new Map(),
 * });
 * assert.match(text, /rpm: \{ capacity: 100, refill_amount: 100, refill_period: 60 \}/);
 * assert.equal(parseLimitsManifest(text, "x").system?.limits.get("rpm")?.capacity, 100);
 * ```
 */
export function renderLimitsManifest(
  state: LimitsState,
  header: readonly string[] = [],
): string {
  const body: Record<string, unknown> = { namespace: state.namespace };
  if (state.system) {
    body["system"] = {
      ...(state.system.onUnavailable
        ? { "on_unavailable": state.system.onUnavailable }
        : {}),
      ...(state.system.limits.size > 0
        ? { limits: limitsObject(state.system.limits) }
        : {}),
    };
  }
  if (state.resources.size > 0) {
    body["resources"] = Object.fromEntries(
      sortedEntries(state.resources).map((
        [r, set],
      ) => [r, { limits: limitsObject(set) }]),
    );
  }
  if (state.entities.size > 0) {
    body["entities"] = Object.fromEntries(
      sortedEntries(state.entities).map(([id, byResource]) => [id, {
        resources: Object.fromEntries(
          sortedEntries(byResource).map((
            [r, set],
          ) => [r, { limits: limitsObject(set) }]),
        ),
      }]),
    );
  }
  const doc = new Document(body);
  // One line per limit: `rpm: { capacity: 100, refill_amount: 100, refill_period: 60 }`.
  const flowLimits = (node: unknown): void => {
    if (!isMap(node)) return;
    for (const pair of node.items) {
      if (
        isScalar(pair.key) && pair.key.value === "limits" && isMap(pair.value)
      ) {
        for (const l of pair.value.items) {
          if (isMap(l.value)) l.value.flow = true;
        }
      } else flowLimits(pair.value);
    }
  };
  flowLimits(doc.contents);
  if (header.length > 0) {
    doc.commentBefore = header.map((h) => ` ${h}`).join("\n");
  }
  return doc.toString({ lineWidth: 0 });
}
