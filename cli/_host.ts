/**
 * The runtime calls of the `limits` and `local` commands (files), in one
 * place so the commands stay plain functions of their inputs.
 *
 * @module
 */
import { CliExit, EXIT } from "./_context.ts";

function describeFsError(e: unknown): string {
  const name = e instanceof Error ? e.name : "";
  if (name === "NotFound") return "no such file";
  if (name === "PermissionDenied" || name === "NotCapable") {
    return "permission denied";
  }
  if (name === "IsADirectory") return "it is a directory";
  return e instanceof Error ? e.message : String(e);
}

/**
 * Reads a UTF-8 text file.
 *
 * @throws {CliExit} exit 1 naming the file and what to do
 */
export async function readTextFile(
  path: string,
  what: string,
): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    throw new CliExit(
      EXIT.FAILURE,
      `Cannot read ${what} "${path}": ${describeFsError(e)}`,
      { cause: e },
    );
  }
}

/**
 * Writes a UTF-8 text file (replacing it).
 *
 * @throws {CliExit} exit 1 naming the file
 */
export async function writeTextFile(
  path: string,
  text: string,
  what: string,
): Promise<void> {
  try {
    await Deno.writeTextFile(path, text);
  } catch (e) {
    throw new CliExit(
      EXIT.FAILURE,
      `Cannot write ${what} "${path}": ${describeFsError(e)}`,
      { cause: e },
    );
  }
}
