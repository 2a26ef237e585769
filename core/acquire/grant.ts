/**
 * What an acquire granted: the amounts recorded on its lease
 * (`lease.granted`), the whole ask or, with `min`, the partial grant.
 *
 * @module
 */
import { type Lease, recordGrant } from "../lease.ts";
import { acquirePartial } from "./partial.ts";

/** Records on `lease` the millitokens granted per name, as whole tokens. */
export function grant(
  lease: Lease,
  granted: ReadonlyMap<string, bigint>,
): Lease {
  recordGrant(lease, granted);
  return lease;
}

/** Admits `consume` through `admit`, or with `min` the most that fits (a partial grant); records the grant. */
export async function grantOf(
  consume: ReadonlyMap<string, bigint>,
  min: ReadonlyMap<string, bigint> | null,
  admit: (c: ReadonlyMap<string, bigint>) => Promise<Lease>,
): Promise<Lease> {
  if (min === null) return grant(await admit(consume), consume);
  const g = await acquirePartial(consume, min, admit);
  return grant(g.value, g.granted);
}
