/**
 * The table layout of schema 0.10 as data (spec 01 §1): keys, GSI1-4, the
 * five LSIs, streams with both images. Used by `Repository.createTable`, the
 * CLI's local deploy and the CloudFormation template.
 *
 * @module
 */
import type { CreateTableCommandInput } from "@aws-sdk/client-dynamodb";

/** The stored-format version this client reads and writes. */
export const SCHEMA_VERSION = "0.10.0";
/** This client's version (same line as the Python reference, so `client_min_version` means the same to both). */
export const CLIENT_VERSION = "0.10.0";
/** The TTL attribute (epoch seconds). */
export const TTL_ATTRIBUTE = "ttl";

/** Names of the 15 string key attributes every table declares. */
export const KEY_ATTRIBUTES = [
  "PK",
  "SK",
  "GSI1PK",
  "GSI1SK",
  "GSI2PK",
  "GSI2SK",
  "GSI3PK",
  "GSI3SK",
  "GSI4PK",
  "GSI4SK",
  "LSI1SK",
  "LSI2SK",
  "LSI3SK",
  "LSI4SK",
  "LSI5SK",
] as const;

/** Global secondary indexes: name, projection. */
export const GSIS = [
  { name: "GSI1", projection: "ALL" },
  { name: "GSI2", projection: "ALL" },
  { name: "GSI3", projection: "KEYS_ONLY" },
  { name: "GSI4", projection: "KEYS_ONLY" },
] as const;

/** Local secondary indexes: odd ones project ALL, even ones KEYS_ONLY. */
export const LSIS = [
  { name: "LSI1", projection: "ALL" },
  { name: "LSI2", projection: "KEYS_ONLY" },
  { name: "LSI3", projection: "ALL" },
  { name: "LSI4", projection: "KEYS_ONLY" },
  { name: "LSI5", projection: "ALL" },
] as const;

/** The CreateTable request for a schema-0.10 table (on-demand, stream NEW_AND_OLD_IMAGES). */
export function createTableInput(tableName: string): CreateTableCommandInput {
  return {
    TableName: tableName,
    BillingMode: "PAY_PER_REQUEST",
    AttributeDefinitions: KEY_ATTRIBUTES.map((name) => ({
      AttributeName: name,
      AttributeType: "S",
    })),
    KeySchema: [
      { AttributeName: "PK", KeyType: "HASH" },
      { AttributeName: "SK", KeyType: "RANGE" },
    ],
    GlobalSecondaryIndexes: GSIS.map((g) => ({
      IndexName: g.name,
      KeySchema: [
        { AttributeName: `${g.name}PK`, KeyType: "HASH" },
        { AttributeName: `${g.name}SK`, KeyType: "RANGE" },
      ],
      Projection: { ProjectionType: g.projection },
    })),
    LocalSecondaryIndexes: LSIS.map((l) => ({
      IndexName: l.name,
      KeySchema: [
        { AttributeName: "PK", KeyType: "HASH" },
        { AttributeName: `${l.name}SK`, KeyType: "RANGE" },
      ],
      Projection: { ProjectionType: l.projection },
    })),
    StreamSpecification: {
      StreamEnabled: true,
      StreamViewType: "NEW_AND_OLD_IMAGES",
    },
  };
}
