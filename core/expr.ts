/**
 * Expression building with index-based placeholders (`#n0`, `:v0`), so any
 * valid limit name (`gpt-3.5`, `rate-limit`) works (reference weakness 24),
 * and attribute-value codecs.
 *
 * @module
 */
import type { AttributeValue } from "@aws-sdk/client-dynamodb";

/**
 * An attribute name that may stand in an expression as it is: letters,
 * digits and underscores, starting with a letter, with at least one
 * underscore (no DynamoDB reserved word has one). Bucket attributes
 * (`b_rpm_tk`) qualify, so the hot path sends no alias for them.
 */
const PLAIN_NAME = /^[A-Za-z][A-Za-z0-9_]*_[A-Za-z0-9_]*$/;

/**
 * Attribute names without an underscore that are not DynamoDB reserved
 * words (checked against DynamoDB's list: `ttl`, `cascade`, `raw` are
 * reserved and keep their alias): the bucket item's `rf` goes unaliased.
 */
const UNRESERVED = new Set(["rf"]);

/** Whether each name seen needs no alias (names are few; capped). */
const PLAIN = new Map<string, boolean>();

function isPlain(name: string): boolean {
  let plain = PLAIN.get(name);
  if (plain === undefined) {
    plain = UNRESERVED.has(name) || PLAIN_NAME.test(name);
    if (PLAIN.size < 10_000) PLAIN.set(name, plain);
  }
  return plain;
}

/** `:v0`, `:v1`, … (a write's first placeholders, built once). */
const VALUE_PLACEHOLDERS = Array.from({ length: 32 }, (_, i) => `:v${i}`);

/** Collects attribute names and values for one request. */
export class Expr {
  /** `ExpressionAttributeNames`. */
  readonly names: Record<string, string> = {};
  /** `ExpressionAttributeValues`. */
  readonly values: Record<string, AttributeValue> = {};
  #nameIndex: Map<string, string> | null = null;
  #valueCount = 0;
  #numbers: Map<bigint | number, string> | null = null;
  #strings: Map<string, string> | null = null;

  /** The name itself when it needs no alias, else a placeholder (reused for the same name). */
  n(name: string): string {
    if (isPlain(name)) return name;
    const index = this.#nameIndex ??= new Map();
    let p = index.get(name);
    if (p === undefined) {
      p = `#n${index.size}`;
      index.set(name, p);
      this.names[p] = name;
    }
    return p;
  }

  /** Placeholder for a value. */
  v(value: AttributeValue): string {
    const i = this.#valueCount++;
    const p = VALUE_PLACEHOLDERS[i] ?? `:v${i}`;
    this.values[p] = value;
    return p;
  }

  /** Placeholder for a number value (reused for the same number). */
  num(value: bigint | number): string {
    // A number and a bigint of one value are told apart: at worst one value sent twice.
    const numbers = this.#numbers ??= new Map();
    let p = numbers.get(value);
    if (p === undefined) {
      p = this.v({ N: String(value) });
      numbers.set(value, p);
    }
    return p;
  }

  /** Placeholder for a string value (reused for the same string). */
  str(value: string): string {
    const strings = this.#strings ??= new Map();
    let p = strings.get(value);
    if (p === undefined) {
      p = this.v({ S: value });
      strings.set(value, p);
    }
    return p;
  }

  /** The name/value maps, omitting empty ones (DynamoDB rejects empty maps). */
  attrs(): {
    ExpressionAttributeNames?: Record<string, string>;
    ExpressionAttributeValues?: Record<string, AttributeValue>;
  } {
    const out: {
      ExpressionAttributeNames?: Record<string, string>;
      ExpressionAttributeValues?: Record<string, AttributeValue>;
    } = {};
    if (this.#nameIndex) out.ExpressionAttributeNames = this.names;
    if (this.#valueCount > 0) out.ExpressionAttributeValues = this.values;
    return out;
  }
}

/** Builds `SET a, b ADD c REMOVE d` from clause lists, skipping empty clauses. */
export function updateExpression(
  clauses: { set?: string[]; add?: string[]; remove?: string[] },
): string {
  const parts: string[] = [];
  if (clauses.set?.length) parts.push(`SET ${clauses.set.join(", ")}`);
  if (clauses.add?.length) parts.push(`ADD ${clauses.add.join(", ")}`);
  if (clauses.remove?.length) parts.push(`REMOVE ${clauses.remove.join(", ")}`);
  return parts.join(" ");
}

/** A stored item. */
export type Item = Record<string, AttributeValue>;

/** Reads a string attribute. */
export function str(item: Item, name: string): string | null {
  const a = item[name];
  return a && "S" in a && typeof a.S === "string" ? a.S : null;
}

/** Reads a number attribute as bigint (integers only; decimals are floored). */
export function big(item: Item, name: string): bigint | null {
  const a = item[name];
  if (!a || !("N" in a) || typeof a.N !== "string") return null;
  const t = a.N;
  if (/^-?\d+$/.test(t)) return BigInt(t);
  return BigInt(Math.floor(Number(t)));
}

/** Reads a number attribute as a JS number. */
export function num(item: Item, name: string): number | null {
  const a = item[name];
  return a && "N" in a && typeof a.N === "string" ? Number(a.N) : null;
}

/** Reads a boolean attribute. */
export function bool(item: Item, name: string): boolean | null {
  const a = item[name];
  return a && "BOOL" in a && typeof a.BOOL === "boolean" ? a.BOOL : null;
}

/** Encodes a plain value (spec 01 §6): string S, boolean BOOL, number N, object M, array L, null NULL. */
export function toAttr(value: unknown): AttributeValue {
  if (value === null || value === undefined) return { NULL: true };
  if (typeof value === "string") return { S: value };
  if (typeof value === "boolean") return { BOOL: value };
  if (typeof value === "number" || typeof value === "bigint") {
    return { N: String(value) };
  }
  if (Array.isArray(value)) return { L: value.map((v) => toAttr(v)) };
  if (typeof value === "object") {
    const m: Record<string, AttributeValue> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      m[k] = toAttr(v);
    }
    return { M: m };
  }
  return { S: String(value) };
}

/** Decodes an attribute value to a plain value (N with `.` → float, else integer). */
export function fromAttr(a: AttributeValue | undefined): unknown {
  if (!a) return null;
  if ("S" in a && a.S !== undefined) return a.S;
  if ("N" in a && a.N !== undefined) return Number(a.N);
  if ("BOOL" in a && a.BOOL !== undefined) return a.BOOL;
  if ("NULL" in a && a.NULL) return null;
  if ("L" in a && a.L) return a.L.map((x) => fromAttr(x));
  if ("M" in a && a.M) {
    const o: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(a.M)) o[k] = fromAttr(v);
    return o;
  }
  if ("SS" in a && a.SS) return [...a.SS];
  if ("NS" in a && a.NS) return a.NS.map(Number);
  return null;
}
