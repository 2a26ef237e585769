/**
 * Classification of AWS SDK errors by name, shared by the repository, the
 * limiter, the CLI and the migrations (fakes throw plain objects with a
 * `name`, so nothing here uses `instanceof`).
 *
 * @module
 */

/** The `name` of an error-like value, or `""`. */
export function errorName(e: unknown): string {
  return e && typeof e === "object" && "name" in e
    ? String((e as { name: unknown }).name)
    : "";
}

/** Whether an SDK error is a failed condition on a single-item write. */
export function isConditionFailed(e: unknown): boolean {
  return errorName(e) === "ConditionalCheckFailedException";
}

/** Whether an SDK error says the table (or index) does not exist. */
export function isResourceNotFound(e: unknown): boolean {
  return errorName(e) === "ResourceNotFoundException";
}

/** Cancellation reason codes of a cancelled transaction (`[]` for other errors). */
export function cancellationCodes(e: unknown): string[] {
  if (errorName(e) !== "TransactionCanceledException") return [];
  const reasons =
    (e as { CancellationReasons?: { Code?: string }[] }).CancellationReasons ??
      [];
  const codes = reasons.map((r) => r.Code ?? "None");
  if (codes.length === 0) {
    // Some SDK versions only put the reasons in the message.
    const m = /\[(.*)\]/.exec(String((e as Error).message));
    if (m) return (m[1] ?? "").split(",").map((s) => s.trim());
  }
  return codes;
}

/** Whether a cancelled transaction failed only on conflicts with other writers (worth retrying). */
export function isTransactionConflictOnly(e: unknown): boolean {
  const codes = cancellationCodes(e);
  return codes.length > 0 &&
    codes.every((c) => c === "TransactionConflict" || c === "None");
}
