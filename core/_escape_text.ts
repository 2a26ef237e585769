/**
 * How a message echoes text and values from input: control, bidirectional
 * and other unsafe characters escaped, long values cut. Used by every error
 * class (and re-exported from `errors.ts` under the same names).
 *
 * @module
 */

/**
 * Longest echo of an input value, field or identifier in a message, in
 * characters after escaping. A longer one is cut at a character boundary,
 * marked with `...`, and (for a string or an array) followed by its length.
 */
export const MAX_SHOWN_LENGTH = 200;

/** Longest {@linkcode ValidationError.reason} kept in the message, after escaping. */
export const MAX_REASON_LENGTH = 1000;

/**
 * Characters never echoed raw (log and terminal injection): C0 and C1
 * controls, DEL, line and paragraph separators, bidirectional marks,
 * embeddings, overrides and isolates, and the byte order mark. Lone
 * surrogates are escaped too.
 */
function isUnsafe(cp: number): boolean {
  return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp === 0x061c ||
    cp === 0x200e || cp === 0x200f || (cp >= 0x2028 && cp <= 0x202e) ||
    (cp >= 0x2066 && cp <= 0x2069) || (cp >= 0xd800 && cp <= 0xdfff) ||
    cp === 0xfeff;
}

function escapePoint(cp: number, ch: string, quotes: boolean): string {
  if (quotes && (ch === "\\" || ch === '"')) return `\\${ch}`;
  if (!isUnsafe(cp)) return ch;
  switch (cp) {
    case 0x08:
      return "\\b";
    case 0x09:
      return "\\t";
    case 0x0a:
      return "\\n";
    case 0x0c:
      return "\\f";
    case 0x0d:
      return "\\r";
  }
  return `\\u${cp.toString(16).padStart(4, "0")}`;
}

/** Text built from atomic pieces (an escape is never split) up to a cap. */
class Echo {
  text = "";
  cut = false;
  readonly cap: number;
  constructor(cap: number) {
    this.cap = cap;
  }

  add(piece: string): boolean {
    if (this.cut) return false;
    if (this.text.length + piece.length > this.cap) {
      this.cut = true;
      return false;
    }
    this.text += piece;
    return true;
  }

  /** Adds a string's code points, escaped; `quotes` also escapes `\` and `"`. */
  addString(s: string, quotes: boolean): boolean {
    for (let i = 0; i < s.length;) {
      const cp = s.codePointAt(i) as number;
      const n = cp > 0xffff ? 2 : 1;
      if (!this.add(escapePoint(cp, s.slice(i, i + n), quotes))) return false;
      i += n;
    }
    return true;
  }

  get shown(): string {
    return this.cut ? `${this.text}...` : this.text;
  }
}

/**
 * Escapes the characters of `text` that must not reach a log or a terminal
 * raw (`\n`, `\r`, `\t`, `\b`, `\f` or `\uXXXX`, as in JSON), and cuts it
 * to `max` characters plus `...`. `quotes` also escapes `\` and `"`, so the
 * result is the body of a JSON string literal and cannot fake a closing quote.
 */
export function escapeText(
  text: string,
  options: { max?: number; quotes?: boolean } = {},
): string {
  const out = new Echo(options.max ?? Infinity);
  out.addString(text, options.quotes ?? false);
  return out.shown;
}

function formatInto(
  out: Echo,
  value: unknown,
  top: boolean,
  path: Set<object>,
): void {
  switch (typeof value) {
    case "string":
      if (top) out.addString(value, true);
      else if (out.add('"') && out.addString(value, true)) out.add('"');
      return;
    case "number": // NaN, Infinity and -Infinity as themselves, not JSON's null
    case "bigint":
    case "boolean":
    case "undefined":
      out.add(String(value));
      return;
    case "symbol":
      out.addString(String(value), true);
      return;
    case "function":
      out.add("[Function]");
      return;
  }
  if (value === null) {
    out.add("null");
    return;
  }
  const obj = value as object;
  if (path.has(obj)) {
    out.add("[Circular]");
    return;
  }
  path.add(obj);
  try {
    const toJSON = (obj as { toJSON?: unknown }).toJSON;
    const json = typeof toJSON === "function" ? toJSON.call(obj) : obj;
    if (json !== obj) {
      formatInto(out, json, false, path);
    } else if (Array.isArray(obj)) {
      out.add("[");
      for (let i = 0; i < obj.length; i++) {
        if (i > 0 && !out.add(",")) return;
        formatInto(out, obj[i], false, path);
        if (out.cut) return;
      }
      out.add("]");
    } else if (obj instanceof Map || obj instanceof Set) {
      out.add(`${obj instanceof Map ? "Map" : "Set"}(${obj.size})`);
    } else {
      out.add("{");
      let first = true;
      for (const k of Object.keys(obj)) {
        if (!first && !out.add(",")) return;
        first = false;
        if (!out.add('"') || !out.addString(k, true) || !out.add('":')) return;
        formatInto(out, (obj as Record<string, unknown>)[k], false, path);
        if (out.cut) return;
      }
      out.add("}");
    }
  } finally {
    path.delete(obj);
  }
}

/**
 * How a value of any type is echoed in a message: a string as the body of a
 * JSON string literal (control characters escaped), anything else in a
 * JSON-like form that shows `NaN`, `Infinity`, `-Infinity`, `undefined` and
 * bigints as themselves; cut to {@linkcode MAX_SHOWN_LENGTH} characters plus
 * `...`. `note` gives the full length when it was cut.
 */
export function describeValue(
  value: unknown,
): { shown: string; note: string | null } {
  const out = new Echo(MAX_SHOWN_LENGTH);
  try {
    formatInto(out, value, true, new Set());
  } catch {
    // A throwing getter, toJSON or proxy trap.
    return {
      shown: escapeText(Object.prototype.toString.call(value)),
      note: null,
    };
  }
  if (!out.cut) return { shown: out.text, note: null };
  let note: string | null = null;
  if (typeof value === "string") note = `${value.length} characters`;
  else if (Array.isArray(value)) note = `${value.length} items`;
  return { shown: out.shown, note };
}

/** An identifier or name from input, for a message. */
export function echo(text: string): string {
  return escapeText(String(text), { max: MAX_SHOWN_LENGTH, quotes: true });
}
