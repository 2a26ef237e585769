/**
 * Table administration: create the table of schema 0.10 with TTL on, delete
 * it, and check that DynamoDB answers for it.
 *
 * @module
 */
import {
  CreateTableCommand,
  DeleteTableCommand,
  DescribeTableCommand,
  GetItemCommand,
  UpdateTimeToLiveCommand,
} from "@aws-sdk/client-dynamodb";
import { errorName, isResourceNotFound } from "../_sdk_errors.ts";
import { createTableInput, TTL_ATTRIBUTE } from "../schema.ts";
import type { TableClient } from "./table.ts";
import { versionKey } from "./version_record.ts";

/** Creates the table (schema 0.10) and enables TTL; an existing table is left as is. */
export async function createTableIfMissing(io: TableClient): Promise<void> {
  const { client, name, clock } = io;
  try {
    await client.send(new CreateTableCommand(createTableInput(name)));
  } catch (e) {
    if (errorName(e) !== "ResourceInUseException") throw e;
    return;
  }
  for (let i = 0; i < 120; i++) {
    const d = await client.send(new DescribeTableCommand({ TableName: name }));
    if (d.Table?.TableStatus === "ACTIVE") break;
    await clock.sleep(500);
  }
  await client.send(
    new UpdateTimeToLiveCommand({
      TableName: name,
      TimeToLiveSpecification: { AttributeName: TTL_ATTRIBUTE, Enabled: true },
    }),
  );
}

/** Deletes the table; a missing table is ignored. */
export async function deleteTableIfExists(io: TableClient): Promise<void> {
  try {
    await io.client.send(new DeleteTableCommand({ TableName: io.name }));
  } catch (e) {
    if (!isResourceNotFound(e)) throw e;
  }
}

/** Whether DynamoDB answers for the table within `timeoutMs`; never throws. */
export async function pingTable(
  io: TableClient,
  timeoutMs: number,
): Promise<boolean> {
  try {
    await io.client.send(
      new GetItemCommand({ TableName: io.name, Key: versionKey() }),
      { abortSignal: AbortSignal.timeout(timeoutMs) },
    );
    return true;
  } catch {
    return false;
  }
}
