/**
 * Monotonic ULIDs: 26 Crockford base32 characters, 48-bit millisecond time
 * then 80 random bits; within one millisecond the random part is incremented
 * so ids strictly increase within a process.
 *
 * @module
 */

const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/** Creates a monotonic ULID generator; `random` fills bytes (defaults to `crypto.getRandomValues`). */
export function createUlid(
  random: (bytes: Uint8Array) => void = (b) => crypto.getRandomValues(b),
): (nowMs: number) => string {
  let lastTime = -1;
  const last = new Uint8Array(10);
  return function ulid(nowMs: number): string {
    if (nowMs > lastTime) {
      lastTime = nowMs;
      random(last);
    } else {
      // Same (or earlier) millisecond: increment the 80-bit random part.
      let carry = true;
      for (let i = last.length - 1; i >= 0; i--) {
        const v = last[i] as number;
        if (v === 255) {
          last[i] = 0;
        } else {
          last[i] = v + 1;
          carry = false;
          break;
        }
      }
      // The random part wrapped to zero: carry into the time so ids still increase.
      if (carry) lastTime += 1;
    }
    let out = "";
    let t = lastTime;
    const timeChars: string[] = [];
    for (let i = 0; i < 10; i++) {
      timeChars.push(ALPHABET[t % 32] as string);
      t = Math.floor(t / 32);
    }
    out = timeChars.reverse().join("");
    // 80 bits → 16 chars of 5 bits.
    let bits = 0n;
    for (const b of last) bits = (bits << 8n) | BigInt(b);
    const rand: string[] = [];
    for (let i = 0; i < 16; i++) {
      rand.push(ALPHABET[Number(bits & 31n)] as string);
      bits >>= 5n;
    }
    return out + rand.reverse().join("");
  };
}
