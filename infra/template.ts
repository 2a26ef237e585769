/**
 * The CloudFormation stack of a zae-limiter deployment, rendered as plain
 * data by pure functions (spec 06 §1). The stack holds the rate-limit table
 * (layout from `core/schema.ts`), six managed policies (table-level and
 * namespace-scoped acquire / full access / read-only, actions from
 * `infra/iam_actions.ts`), opt-in IAM roles, the audit archive bucket,
 * CloudWatch alarms with an optional SNS topic and an optional ECS Fargate
 * service running the stream worker.
 *
 * @example Render the template and write it out as JSON
 * ```ts
 * import assert from "node:assert/strict";
 * import { renderTemplateJson } from "./template.ts";
 *
 * const json = renderTemplateJson({ workerImage: "example.com/zae-worker:1" });
 * assert.equal(JSON.parse(json).Parameters.WorkerImage.Default, "example.com/zae-worker:1");
 * ```
 *
 * @module
 */
import {
  createTableInput,
  SCHEMA_VERSION,
  TTL_ATTRIBUTE,
} from "../core/schema.ts";
import { RESERVED_NAMESPACE } from "../core/keys.ts";
import {
  ACQUIRE_ACTIONS,
  type DynamoDbAction,
  FULL_ACCESS_ACTIONS,
  NAMESPACE_TAG_KEY,
  namespaceScopedActions,
  READ_ONLY_ACTIONS,
  RESERVED_NAMESPACE_READ_ACTIONS,
  TABLE_METADATA_ACTIONS,
  WORKER_S3_ACTIONS,
  WORKER_STREAM_ACTIONS,
  WORKER_TABLE_ACTIONS,
} from "./iam_actions.ts";

/** A JSON value: what every part of a rendered template is made of. */
export type JsonValue =
  | string
  | number
  | boolean
  | null
  | readonly JsonValue[]
  | JsonObject;

/** A JSON object with readonly members. */
export interface JsonObject {
  /** A member value. */
  readonly [key: string]: JsonValue;
}

/** One entry of the template's `Parameters` section. */
export interface CloudFormationParameter {
  /** The parameter type. */
  readonly Type: "String" | "Number" | "CommaDelimitedList";
  /** What the parameter controls. */
  readonly Description: string;
  /** The value used when the stack is created without this parameter. */
  readonly Default: string;
  /** The only values CloudFormation accepts, when restricted. */
  readonly AllowedValues?: readonly string[];
  /** A regular expression the value must match, when restricted. */
  readonly AllowedPattern?: string;
  /** The smallest accepted value of a `Number` parameter. */
  readonly MinValue?: number;
  /** The largest accepted value of a `Number` parameter. */
  readonly MaxValue?: number;
  /** The message CloudFormation shows when a constraint fails. */
  readonly ConstraintDescription?: string;
}

/** One assertion of a template rule. */
export interface CloudFormationAssertion {
  /** A rule-specific intrinsic that must be true. */
  readonly Assert: JsonValue;
  /** The message shown when the assertion fails. */
  readonly AssertDescription: string;
}

/** One entry of the template's `Rules` section (checked before any change). */
export interface CloudFormationRule {
  /** When the assertions apply; always when absent. */
  readonly RuleCondition?: JsonValue;
  /** The assertions that must all hold. */
  readonly Assertions: readonly CloudFormationAssertion[];
}

/** One entry of the template's `Resources` section. */
export interface CloudFormationResource {
  /** The resource type, e.g. `AWS::DynamoDB::Table`. */
  readonly Type: string;
  /** The condition that must be true for the resource to exist. */
  readonly Condition?: string;
  /** What happens to the physical resource when it leaves the stack. */
  readonly DeletionPolicy?: "Delete" | "Retain" | "Snapshot";
  /** What happens to the old physical resource when an update replaces it. */
  readonly UpdateReplacePolicy?: "Delete" | "Retain" | "Snapshot";
  /** The resource properties. */
  readonly Properties: JsonObject;
}

/** One entry of the template's `Outputs` section. */
export interface CloudFormationOutput {
  /** What the output is. */
  readonly Description: string;
  /** The output value. */
  readonly Value: JsonValue;
  /** The condition that must be true for the output to exist. */
  readonly Condition?: string;
  /** The cross-stack export. */
  readonly Export: { readonly Name: JsonValue };
}

/** A rendered CloudFormation template; serialise it with `JSON.stringify`. */
export interface CloudFormationTemplate {
  /** Always `2010-09-09`. */
  readonly AWSTemplateFormatVersion: "2010-09-09";
  /** The stack description. */
  readonly Description: string;
  /** Input parameters, keyed by name. */
  readonly Parameters: Readonly<Record<string, CloudFormationParameter>>;
  /** Parameter combinations rejected before any change. */
  readonly Rules: Readonly<Record<string, CloudFormationRule>>;
  /** Named conditions. */
  readonly Conditions: Readonly<Record<string, JsonValue>>;
  /** Resources, keyed by logical ID. */
  readonly Resources: Readonly<Record<string, CloudFormationResource>>;
  /** Outputs, keyed by name. */
  readonly Outputs: Readonly<Record<string, CloudFormationOutput>>;
}

/** Options of {@linkcode renderTemplate}. */
export interface TemplateOptions {
  /**
   * The template description.
   *
   * @default {"zae-limiter distributed rate limiter (schema 0.10.0)"}
   */
  readonly description?: string;
  /**
   * Default of the `SchemaVersion` parameter.
   *
   * @default {SCHEMA_VERSION}
   */
  readonly schemaVersion?: string;
  /**
   * Default of the `WorkerImage` parameter; an empty image deploys no
   * stream worker.
   *
   * @default {""}
   */
  readonly workerImage?: string;
}

/**
 * Logical ID of the rate-limit table.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { renderTemplate, TABLE_LOGICAL_ID } from "./template.ts";
 *
 * assert.ok(TABLE_LOGICAL_ID in renderTemplate().Resources);
 * ```
 */
export const TABLE_LOGICAL_ID = "RateLimitsTable";

const TABLE = TABLE_LOGICAL_ID;
const NO_VALUE: JsonObject = { Ref: "AWS::NoValue" };
const NAMESPACE_TAG = `\${aws:PrincipalTag/${NAMESPACE_TAG_KEY}}`;
/** Log retention periods CloudWatch accepts, in days (the `LogRetentionDays` parameter). */
export const LOG_RETENTION_DAYS: readonly string[] = [
  "1",
  "3",
  "5",
  "7",
  "14",
  "30",
  "60",
  "90",
  "120",
  "150",
  "180",
  "365",
  "400",
  "545",
  "731",
  "1096",
  "1827",
  "2192",
  "2557",
  "2922",
  "3288",
  "3653",
];
const APPLICATION_TAG: JsonObject = {
  Key: "Application",
  Value: "zae-limiter",
};

function ref(name: string): JsonObject {
  return { Ref: name };
}

function getAtt(logicalId: string, attribute: string): JsonObject {
  return { "Fn::GetAtt": [logicalId, attribute] };
}

function sub(text: string): JsonObject {
  return { "Fn::Sub": text };
}

function fnIf(
  condition: string,
  whenTrue: JsonValue,
  whenFalse: JsonValue,
): JsonObject {
  return { "Fn::If": [condition, whenTrue, whenFalse] };
}

function equals(left: JsonValue, right: JsonValue): JsonObject {
  return { "Fn::Equals": [left, right] };
}

function not(condition: JsonValue): JsonObject {
  return { "Fn::Not": [condition] };
}

function and(...conditions: JsonValue[]): JsonObject {
  return { "Fn::And": conditions };
}

function condition(name: string): JsonObject {
  return { Condition: name };
}

function isTrue(parameter: string): JsonObject {
  return equals(ref(parameter), "true");
}

function isSet(parameter: string): JsonObject {
  return not(equals(ref(parameter), ""));
}

function booleanParameter(
  description: string,
  defaultValue: boolean,
): CloudFormationParameter {
  return {
    Type: "String",
    Description: description,
    Default: String(defaultValue),
    AllowedValues: ["true", "false"],
  };
}

function optionalName(description: string): CloudFormationParameter {
  return { Type: "String", Description: description, Default: "" };
}

/** Converts SDK-shaped data (optional members may be `undefined`) to JSON. */
function toJson(value: unknown): JsonValue {
  if (
    value === null || typeof value === "string" || typeof value === "boolean" ||
    (typeof value === "number" && Number.isFinite(value))
  ) {
    return value;
  }
  if (Array.isArray(value)) return value.map(toJson);
  if (typeof value === "object") {
    const out: Record<string, JsonValue> = {};
    for (const [key, member] of Object.entries(value)) {
      if (member !== undefined) out[key] = toJson(member);
    }
    return out;
  }
  throw new TypeError(
    `Cannot convert value to JSON: type is "${typeof value}"`,
  );
}

function tableArn(): JsonObject {
  return getAtt(TABLE, "Arn");
}

function tableAndIndexes(): JsonValue[] {
  return [tableArn(), sub(`\${${TABLE}.Arn}/index/*`)];
}

function policyDocument(statements: readonly JsonValue[]): JsonObject {
  return { Version: "2012-10-17", Statement: statements };
}

function tablePolicyDocument(actions: readonly DynamoDbAction[]): JsonObject {
  return policyDocument([{
    Sid: "TableItems",
    Effect: "Allow",
    Action: [...actions],
    Resource: tableAndIndexes(),
  }]);
}

function leadingKeys(
  operator: string,
  patterns: readonly string[],
): JsonObject {
  return {
    [`ForAllValues:${operator}`]: { "dynamodb:LeadingKeys": [...patterns] },
    StringNotEquals: {
      [`aws:PrincipalTag/${NAMESPACE_TAG_KEY}`]: RESERVED_NAMESPACE,
    },
  };
}

/**
 * A namespace-scoped policy: item actions on keys under the principal's
 * namespace (`{tag}/*`, and the bare `{tag}` on GSI4 whose hash key is the
 * namespace ID), reads of the reserved namespace, and table metadata.
 */
function namespacePolicyDocument(
  actions: readonly DynamoDbAction[],
): JsonObject {
  const scoped = namespaceScopedActions(actions);
  const metadata = TABLE_METADATA_ACTIONS.filter((action) =>
    actions.includes(action)
  );
  const statements: JsonValue[] = [
    {
      Sid: "NamespaceItems",
      Effect: "Allow",
      Action: scoped,
      Resource: tableAndIndexes(),
      Condition: leadingKeys("StringLike", [`${NAMESPACE_TAG}/*`]),
    },
  ];
  if (scoped.includes("dynamodb:Query")) {
    statements.push({
      Sid: "NamespaceIndex",
      Effect: "Allow",
      Action: ["dynamodb:Query"],
      Resource: [sub(`\${${TABLE}.Arn}/index/GSI4`)],
      Condition: leadingKeys("StringEquals", [NAMESPACE_TAG]),
    });
  }
  statements.push({
    Sid: "ReservedNamespaceReads",
    Effect: "Allow",
    Action: [...RESERVED_NAMESPACE_READ_ACTIONS],
    Resource: [tableArn()],
    Condition: {
      "ForAllValues:StringLike": {
        "dynamodb:LeadingKeys": [`${RESERVED_NAMESPACE}/*`],
      },
    },
  });
  if (metadata.length > 0) {
    statements.push({
      Sid: "TableMetadata",
      Effect: "Allow",
      Action: metadata,
      Resource: [tableArn()],
    });
  }
  return policyDocument(statements);
}

function permissionsBoundary(): JsonObject {
  return fnIf("HasPermissionBoundary", ref("PermissionBoundary"), NO_VALUE);
}

function namedOrDefault(parameter: string, suffix: string): JsonObject {
  return fnIf(
    `Has${parameter}`,
    ref(parameter),
    sub(`\${AWS::StackName}-${suffix}`),
  );
}

function renderParameters(
  schemaVersion: string,
  workerImage: string,
): Record<string, CloudFormationParameter> {
  return {
    SchemaVersion: {
      Type: "String",
      Description:
        "Stored-format version of the table (the CLI always passes the current one)",
      Default: schemaVersion,
    },
    SnapshotWindows: {
      Type: "String",
      Description:
        "Comma-separated usage snapshot windows (hourly, daily, monthly)",
      Default: "hourly,daily",
      AllowedPattern: "^(hourly|daily|monthly)(,(hourly|daily|monthly))*$",
    },
    SnapshotRetentionDays: {
      Type: "Number",
      Description: "Days usage snapshots are kept",
      Default: "90",
      MinValue: 1,
      MaxValue: 3650,
    },
    PITRRecoveryPeriodDays: {
      Type: "String",
      Description:
        "Point-in-time recovery window in days (1-35); empty uses the AWS default",
      Default: "",
      AllowedPattern: "^$|^([1-9]|[12][0-9]|3[0-5])$",
      ConstraintDescription: "must be empty or a whole number from 1 to 35",
    },
    EnableDeletionProtection: booleanParameter(
      "Enable deletion protection on the table",
      false,
    ),
    EnableAlarms: booleanParameter("Create CloudWatch alarms", true),
    AlarmSNSTopicArn: {
      Type: "String",
      Description:
        "SNS topic for alarm notifications; empty creates a topic in the stack",
      Default: "",
    },
    LogRetentionDays: {
      Type: "Number",
      Description: "Retention of the worker's CloudWatch log group, in days",
      Default: "30",
      AllowedValues: LOG_RETENTION_DAYS,
    },
    PermissionBoundary: {
      Type: "String",
      Description:
        "ARN of a permissions boundary for every role of the stack (the CLI expands a bare policy name)",
      Default: "",
      AllowedPattern: "^$|^arn:aws[a-z-]*:iam::([0-9]{12}|aws):policy/.+$",
      ConstraintDescription: "must be empty or an IAM policy ARN",
    },
    EnableIAM: booleanParameter(
      "Create the managed policies (and allow roles)",
      true,
    ),
    EnableIAMRoles: booleanParameter(
      "Create the app, admin and read-only roles",
      false,
    ),
    AppRoleName: optionalName("Name of the app role; empty means {stack}-app"),
    AdminRoleName: optionalName(
      "Name of the admin role; empty means {stack}-admin",
    ),
    ReadOnlyRoleName: optionalName(
      "Name of the read-only role; empty means {stack}-read",
    ),
    AcquireOnlyPolicyName: optionalName(
      "Name of the acquire policy; empty means {stack}-acq",
    ),
    FullAccessPolicyName: optionalName(
      "Name of the full-access policy; empty means {stack}-full",
    ),
    ReadOnlyPolicyName: optionalName(
      "Name of the read-only policy; empty means {stack}-read",
    ),
    NamespaceAcquirePolicyName: optionalName(
      "Name of the namespace acquire policy; empty means {stack}-ns-acq",
    ),
    NamespaceFullAccessPolicyName: optionalName(
      "Name of the namespace full-access policy; empty means {stack}-ns-full",
    ),
    NamespaceReadOnlyPolicyName: optionalName(
      "Name of the namespace read-only policy; empty means {stack}-ns-read",
    ),
    EnableAuditArchival: booleanParameter(
      "Create the S3 bucket audit events are archived to",
      true,
    ),
    AuditArchiveGlacierTransitionDays: {
      Type: "Number",
      Description:
        "Days before archived audit objects move to Glacier Instant Retrieval",
      Default: "90",
      MinValue: 1,
      MaxValue: 3650,
    },
    WorkerImage: {
      Type: "String",
      Description:
        "Container image of the stream worker; empty deploys no ECS service",
      Default: workerImage,
    },
    WorkerCpu: {
      Type: "String",
      Description: "Fargate CPU units of the worker task",
      Default: "256",
      AllowedValues: ["256", "512", "1024", "2048", "4096"],
    },
    WorkerMemory: {
      Type: "String",
      Description: "Memory of the worker task in MiB (must suit WorkerCpu)",
      Default: "512",
      AllowedPattern: "^[1-9][0-9]*$",
    },
    WorkerCpuArchitecture: {
      Type: "String",
      Description: "CPU architecture of the worker image",
      Default: "X86_64",
      AllowedValues: ["X86_64", "ARM64"],
    },
    WorkerDesiredCount: {
      Type: "Number",
      Description: "Number of worker tasks (0 pauses the worker)",
      Default: "1",
      MinValue: 0,
      MaxValue: 10,
    },
    WorkerSubnetIds: {
      Type: "CommaDelimitedList",
      Description: "Subnets of the worker tasks (required with WorkerImage)",
      Default: "",
    },
    WorkerSecurityGroupIds: {
      Type: "CommaDelimitedList",
      Description:
        "Security groups of the worker tasks; empty uses the VPC default",
      Default: "",
    },
    WorkerAssignPublicIp: {
      Type: "String",
      Description:
        "Give worker tasks a public IP (needed in public subnets without NAT)",
      Default: "DISABLED",
      AllowedValues: ["ENABLED", "DISABLED"],
    },
  };
}

const ROLE_NAME_PARAMETERS = [
  "AppRoleName",
  "AdminRoleName",
  "ReadOnlyRoleName",
] as const;

/** Managed policies: logical ID, name parameter, default name suffix, document. */
const MANAGED_POLICIES = [
  {
    id: "AcquireOnlyPolicy",
    nameParameter: "AcquireOnlyPolicyName",
    suffix: "acq",
    description: "Acquire and release rate limits on every namespace",
    document: (): JsonObject => tablePolicyDocument(ACQUIRE_ACTIONS),
  },
  {
    id: "FullAccessPolicy",
    nameParameter: "FullAccessPolicyName",
    suffix: "full",
    description: "Full read and write access to every namespace",
    document: (): JsonObject => tablePolicyDocument(FULL_ACCESS_ACTIONS),
  },
  {
    id: "ReadOnlyPolicy",
    nameParameter: "ReadOnlyPolicyName",
    suffix: "read",
    description: "Read-only access to every namespace",
    document: (): JsonObject => tablePolicyDocument(READ_ONLY_ACTIONS),
  },
  {
    id: "NamespaceAcquirePolicy",
    nameParameter: "NamespaceAcquirePolicyName",
    suffix: "ns-acq",
    description:
      `Acquire and release rate limits in the namespace of the principal tag ${NAMESPACE_TAG_KEY}`,
    document: (): JsonObject => namespacePolicyDocument(ACQUIRE_ACTIONS),
  },
  {
    id: "NamespaceFullAccessPolicy",
    nameParameter: "NamespaceFullAccessPolicyName",
    suffix: "ns-full",
    description:
      `Full access to the namespace of the principal tag ${NAMESPACE_TAG_KEY}`,
    document: (): JsonObject => namespacePolicyDocument(FULL_ACCESS_ACTIONS),
  },
  {
    id: "NamespaceReadOnlyPolicy",
    nameParameter: "NamespaceReadOnlyPolicyName",
    suffix: "ns-read",
    description:
      `Read-only access to the namespace of the principal tag ${NAMESPACE_TAG_KEY}`,
    document: (): JsonObject => namespacePolicyDocument(READ_ONLY_ACTIONS),
  },
] as const;

/** Opt-in roles: logical ID, name parameter, default suffix, attached policy, tag. */
const ROLES = [
  {
    id: "AppRole",
    nameParameter: "AppRoleName",
    suffix: "app",
    policy: "AcquireOnlyPolicy",
    tag: "app",
  },
  {
    id: "AdminRole",
    nameParameter: "AdminRoleName",
    suffix: "admin",
    policy: "FullAccessPolicy",
    tag: "admin",
  },
  {
    id: "ReadOnlyRole",
    nameParameter: "ReadOnlyRoleName",
    suffix: "read",
    policy: "ReadOnlyPolicy",
    tag: "readonly",
  },
] as const;

function renderConditions(): Record<string, JsonValue> {
  const conditions: Record<string, JsonValue> = {
    IAMEnabled: isTrue("EnableIAM"),
    DeployIAMRolesWithIAM: and(
      isTrue("EnableIAMRoles"),
      condition("IAMEnabled"),
    ),
    HasPermissionBoundary: isSet("PermissionBoundary"),
    HasPITRRecoveryPeriod: isSet("PITRRecoveryPeriodDays"),
    AlarmsEnabled: isTrue("EnableAlarms"),
    HasAlarmSNSTopicArn: isSet("AlarmSNSTopicArn"),
    CreateAlarmTopic: and(
      condition("AlarmsEnabled"),
      not(condition("HasAlarmSNSTopicArn")),
    ),
    DeployAuditArchive: isTrue("EnableAuditArchival"),
    DeployWorker: isSet("WorkerImage"),
    DeployWorkerAlarms: and(
      condition("DeployWorker"),
      condition("AlarmsEnabled"),
    ),
    HasWorkerSecurityGroups: not(
      equals({ "Fn::Join": ["", ref("WorkerSecurityGroupIds")] }, ""),
    ),
  };
  for (
    const name of [
      ...ROLE_NAME_PARAMETERS,
      ...MANAGED_POLICIES.map((p) => p.nameParameter),
    ]
  ) {
    conditions[`Has${name}`] = isSet(name);
  }
  return conditions;
}

function renderRules(): Record<string, CloudFormationRule> {
  return {
    WorkerRequirements: {
      RuleCondition: not(equals(ref("WorkerImage"), "")),
      Assertions: [
        {
          Assert: equals(ref("EnableIAM"), "true"),
          AssertDescription:
            "WorkerImage needs EnableIAM=true: the worker's task role is created by the stack",
        },
        {
          Assert: not({ "Fn::Contains": [ref("WorkerSubnetIds"), ""] }),
          AssertDescription:
            "WorkerImage needs WorkerSubnetIds: Fargate tasks run in VPC subnets",
        },
      ],
    },
    RolesRequireIAM: {
      RuleCondition: equals(ref("EnableIAMRoles"), "true"),
      Assertions: [{
        Assert: equals(ref("EnableIAM"), "true"),
        AssertDescription: "EnableIAMRoles=true needs EnableIAM=true",
      }],
    },
  };
}

function renderTable(): CloudFormationResource {
  const input = createTableInput("");
  return {
    Type: "AWS::DynamoDB::Table",
    DeletionPolicy: "Retain",
    UpdateReplacePolicy: "Retain",
    Properties: {
      TableName: ref("AWS::StackName"),
      BillingMode: toJson(input.BillingMode),
      AttributeDefinitions: toJson(input.AttributeDefinitions),
      KeySchema: toJson(input.KeySchema),
      GlobalSecondaryIndexes: toJson(input.GlobalSecondaryIndexes),
      LocalSecondaryIndexes: toJson(input.LocalSecondaryIndexes),
      StreamSpecification: {
        StreamViewType: toJson(input.StreamSpecification?.StreamViewType),
      },
      TimeToLiveSpecification: { AttributeName: TTL_ATTRIBUTE, Enabled: true },
      PointInTimeRecoverySpecification: {
        PointInTimeRecoveryEnabled: true,
        RecoveryPeriodInDays: fnIf(
          "HasPITRRecoveryPeriod",
          ref("PITRRecoveryPeriodDays"),
          NO_VALUE,
        ),
      },
      DeletionProtectionEnabled: ref("EnableDeletionProtection"),
      Tags: [APPLICATION_TAG],
    },
  };
}

function renderIam(): Record<string, CloudFormationResource> {
  const resources: Record<string, CloudFormationResource> = {};
  for (const policy of MANAGED_POLICIES) {
    resources[policy.id] = {
      Type: "AWS::IAM::ManagedPolicy",
      Condition: "IAMEnabled",
      Properties: {
        ManagedPolicyName: namedOrDefault(policy.nameParameter, policy.suffix),
        Description: policy.description,
        PolicyDocument: policy.document(),
      },
    };
  }
  for (const role of ROLES) {
    resources[role.id] = {
      Type: "AWS::IAM::Role",
      Condition: "DeployIAMRolesWithIAM",
      Properties: {
        RoleName: namedOrDefault(role.nameParameter, role.suffix),
        AssumeRolePolicyDocument: policyDocument([{
          Effect: "Allow",
          Principal: {
            AWS: sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root"),
          },
          Action: "sts:AssumeRole",
        }]),
        ManagedPolicyArns: [ref(role.policy)],
        PermissionsBoundary: permissionsBoundary(),
        Tags: [APPLICATION_TAG, { Key: "Role", Value: role.tag }],
      },
    };
  }
  return resources;
}

function renderArchive(): Record<string, CloudFormationResource> {
  return {
    AuditArchiveBucket: {
      Type: "AWS::S3::Bucket",
      Condition: "DeployAuditArchive",
      DeletionPolicy: "Retain",
      UpdateReplacePolicy: "Retain",
      Properties: {
        BucketEncryption: {
          ServerSideEncryptionConfiguration: [{
            ServerSideEncryptionByDefault: { SSEAlgorithm: "AES256" },
          }],
        },
        PublicAccessBlockConfiguration: {
          BlockPublicAcls: true,
          BlockPublicPolicy: true,
          IgnorePublicAcls: true,
          RestrictPublicBuckets: true,
        },
        OwnershipControls: {
          Rules: [{ ObjectOwnership: "BucketOwnerEnforced" }],
        },
        LifecycleConfiguration: {
          Rules: [{
            Id: "TransitionToGlacier",
            Status: "Enabled",
            Transitions: [{
              StorageClass: "GLACIER_IR",
              TransitionInDays: ref("AuditArchiveGlacierTransitionDays"),
            }],
          }],
        },
        Tags: [APPLICATION_TAG],
      },
    },
    AuditArchiveBucketPolicy: {
      Type: "AWS::S3::BucketPolicy",
      Condition: "DeployAuditArchive",
      Properties: {
        Bucket: ref("AuditArchiveBucket"),
        PolicyDocument: policyDocument([{
          Sid: "DenyInsecureTransport",
          Effect: "Deny",
          Principal: "*",
          Action: "s3:*",
          Resource: [
            getAtt("AuditArchiveBucket", "Arn"),
            sub("${AuditArchiveBucket.Arn}/*"),
          ],
          Condition: { Bool: { "aws:SecureTransport": "false" } },
        }]),
      },
    },
  };
}

function alarmActions(): JsonObject {
  return fnIf("CreateAlarmTopic", [ref("AlarmTopic")], [
    ref("AlarmSNSTopicArn"),
  ]);
}

function throttleAlarm(kind: "read" | "write"): CloudFormationResource {
  const metric = kind === "read" ? "ReadThrottleEvents" : "WriteThrottleEvents";
  return {
    Type: "AWS::CloudWatch::Alarm",
    Condition: "AlarmsEnabled",
    Properties: {
      AlarmName: sub(`\${AWS::StackName}-${kind}-throttle`),
      AlarmDescription:
        `DynamoDB ${kind} requests to the rate-limit table are throttled`,
      Namespace: "AWS/DynamoDB",
      MetricName: metric,
      Dimensions: [{ Name: "TableName", Value: ref(TABLE) }],
      Statistic: "Sum",
      Period: 300,
      EvaluationPeriods: 2,
      Threshold: 1,
      ComparisonOperator: "GreaterThanThreshold",
      TreatMissingData: "notBreaching",
      AlarmActions: alarmActions(),
    },
  };
}

function renderAlarms(): Record<string, CloudFormationResource> {
  return {
    AlarmTopic: {
      Type: "AWS::SNS::Topic",
      Condition: "CreateAlarmTopic",
      Properties: {
        TopicName: sub("${AWS::StackName}-alarms"),
        Tags: [APPLICATION_TAG],
      },
    },
    DynamoDBReadThrottleAlarm: throttleAlarm("read"),
    DynamoDBWriteThrottleAlarm: throttleAlarm("write"),
    WorkerNotRunningAlarm: {
      Type: "AWS::CloudWatch::Alarm",
      Condition: "DeployWorkerAlarms",
      Properties: {
        AlarmName: sub("${AWS::StackName}-worker-not-running"),
        AlarmDescription:
          "No stream worker task reported metrics: snapshots, refills and archival have stopped",
        Namespace: "AWS/ECS",
        MetricName: "CPUUtilization",
        Dimensions: [
          { Name: "ClusterName", Value: ref("WorkerCluster") },
          { Name: "ServiceName", Value: getAtt("WorkerService", "Name") },
        ],
        Statistic: "SampleCount",
        Period: 300,
        EvaluationPeriods: 2,
        Threshold: 1,
        ComparisonOperator: "LessThanThreshold",
        TreatMissingData: "breaching",
        AlarmActions: alarmActions(),
      },
    },
  };
}

function ecsTrustPolicy(): JsonObject {
  return policyDocument([{
    Effect: "Allow",
    Principal: { Service: "ecs-tasks.amazonaws.com" },
    Action: "sts:AssumeRole",
    Condition: {
      StringEquals: { "aws:SourceAccount": ref("AWS::AccountId") },
      ArnLike: {
        "aws:SourceArn": sub(
          "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:*",
        ),
      },
    },
  }]);
}

function environment(values: Readonly<Record<string, JsonValue>>): JsonValue[] {
  return Object.entries(values).map(([Name, Value]) => ({ Name, Value }));
}

function renderWorker(): Record<string, CloudFormationResource> {
  const worker = "DeployWorker";
  return {
    WorkerLogGroup: {
      Type: "AWS::Logs::LogGroup",
      Condition: worker,
      Properties: {
        LogGroupName: sub("/ecs/${AWS::StackName}-worker"),
        RetentionInDays: ref("LogRetentionDays"),
      },
    },
    WorkerCluster: {
      Type: "AWS::ECS::Cluster",
      Condition: worker,
      Properties: {
        ClusterName: sub("${AWS::StackName}-worker"),
        Tags: [APPLICATION_TAG],
      },
    },
    WorkerExecutionRole: {
      Type: "AWS::IAM::Role",
      Condition: worker,
      Properties: {
        RoleName: sub("${AWS::StackName}-ecsexec"),
        AssumeRolePolicyDocument: ecsTrustPolicy(),
        ManagedPolicyArns: [
          sub(
            "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy",
          ),
        ],
        PermissionsBoundary: permissionsBoundary(),
        Tags: [APPLICATION_TAG, { Key: "Role", Value: "worker-execution" }],
      },
    },
    WorkerTaskRole: {
      Type: "AWS::IAM::Role",
      Condition: worker,
      Properties: {
        RoleName: sub("${AWS::StackName}-worker"),
        AssumeRolePolicyDocument: ecsTrustPolicy(),
        Policies: [{
          PolicyName: "stream-worker",
          PolicyDocument: policyDocument([
            {
              Sid: "ReadStream",
              Effect: "Allow",
              Action: [...WORKER_STREAM_ACTIONS],
              Resource: [sub(`\${${TABLE}.Arn}/stream/*`)],
            },
            {
              Sid: "TableItems",
              Effect: "Allow",
              Action: [...WORKER_TABLE_ACTIONS],
              Resource: tableAndIndexes(),
            },
            fnIf("DeployAuditArchive", {
              Sid: "ArchiveAuditEvents",
              Effect: "Allow",
              Action: [...WORKER_S3_ACTIONS],
              Resource: [sub("${AuditArchiveBucket.Arn}/*")],
            }, NO_VALUE),
          ]),
        }],
        PermissionsBoundary: permissionsBoundary(),
        Tags: [APPLICATION_TAG, { Key: "Role", Value: "worker" }],
      },
    },
    WorkerTaskDefinition: {
      Type: "AWS::ECS::TaskDefinition",
      Condition: worker,
      Properties: {
        Family: sub("${AWS::StackName}-worker"),
        RequiresCompatibilities: ["FARGATE"],
        NetworkMode: "awsvpc",
        Cpu: ref("WorkerCpu"),
        Memory: ref("WorkerMemory"),
        RuntimePlatform: {
          OperatingSystemFamily: "LINUX",
          CpuArchitecture: ref("WorkerCpuArchitecture"),
        },
        ExecutionRoleArn: getAtt("WorkerExecutionRole", "Arn"),
        TaskRoleArn: getAtt("WorkerTaskRole", "Arn"),
        ContainerDefinitions: [{
          Name: "worker",
          Image: ref("WorkerImage"),
          Essential: true,
          StopTimeout: 60,
          // Read by `zae-limiter worker run` as the defaults of its flags.
          Environment: environment({
            ZAEL_STACK: ref(TABLE),
            ZAEL_WORKLOADS: fnIf(
              "DeployAuditArchive",
              "aggregator,archiver",
              "aggregator",
            ),
            ZAEL_SNAPSHOT_WINDOWS: ref("SnapshotWindows"),
            ZAEL_SNAPSHOT_RETENTION_DAYS: ref("SnapshotRetentionDays"),
            ZAEL_ARCHIVE_BUCKET: fnIf(
              "DeployAuditArchive",
              ref("AuditArchiveBucket"),
              "",
            ),
          }),
          LogConfiguration: {
            LogDriver: "awslogs",
            Options: {
              "awslogs-group": ref("WorkerLogGroup"),
              "awslogs-region": ref("AWS::Region"),
              "awslogs-stream-prefix": "worker",
            },
          },
        }],
        Tags: [APPLICATION_TAG],
      },
    },
    WorkerService: {
      Type: "AWS::ECS::Service",
      Condition: worker,
      Properties: {
        ServiceName: sub("${AWS::StackName}-worker"),
        Cluster: ref("WorkerCluster"),
        TaskDefinition: ref("WorkerTaskDefinition"),
        LaunchType: "FARGATE",
        DesiredCount: ref("WorkerDesiredCount"),
        DeploymentConfiguration: {
          MinimumHealthyPercent: 0,
          MaximumPercent: 100,
          DeploymentCircuitBreaker: { Enable: true, Rollback: true },
        },
        NetworkConfiguration: {
          AwsvpcConfiguration: {
            AssignPublicIp: ref("WorkerAssignPublicIp"),
            Subnets: ref("WorkerSubnetIds"),
            SecurityGroups: fnIf(
              "HasWorkerSecurityGroups",
              ref("WorkerSecurityGroupIds"),
              NO_VALUE,
            ),
          },
        },
        PropagateTags: "SERVICE",
        EnableECSManagedTags: true,
        Tags: [APPLICATION_TAG],
      },
    },
  };
}

function output(
  description: string,
  value: JsonValue,
  exportName: string,
  outputCondition?: string,
): CloudFormationOutput {
  const base = {
    Description: description,
    Value: value,
    Export: { Name: sub(`\${AWS::StackName}-${exportName}`) },
  };
  return outputCondition ? { ...base, Condition: outputCondition } : base;
}

function renderOutputs(): Record<string, CloudFormationOutput> {
  const outputs: Record<string, CloudFormationOutput> = {
    TableName: output("Rate-limit table name", ref(TABLE), "TableName"),
    TableArn: output("Rate-limit table ARN", tableArn(), "TableArn"),
    StreamArn: output(
      "Rate-limit table stream ARN",
      getAtt(TABLE, "StreamArn"),
      "StreamArn",
    ),
  };
  for (const policy of MANAGED_POLICIES) {
    outputs[`${policy.id}Arn`] = output(
      `${policy.description} (managed policy ARN)`,
      ref(policy.id),
      `${policy.id}Arn`,
      "IAMEnabled",
    );
  }
  for (const role of ROLES) {
    outputs[`${role.id}Arn`] = output(
      `ARN of the ${role.tag} role`,
      getAtt(role.id, "Arn"),
      `${role.id}Arn`,
      "DeployIAMRolesWithIAM",
    );
  }
  outputs.AuditArchiveBucketName = output(
    "Audit archive bucket name",
    ref("AuditArchiveBucket"),
    "AuditArchiveBucketName",
    "DeployAuditArchive",
  );
  outputs.AuditArchiveBucketArn = output(
    "Audit archive bucket ARN",
    getAtt("AuditArchiveBucket", "Arn"),
    "AuditArchiveBucketArn",
    "DeployAuditArchive",
  );
  outputs.AlarmTopicArn = output(
    "SNS topic the alarms notify (subscribe to it)",
    ref("AlarmTopic"),
    "AlarmTopicArn",
    "CreateAlarmTopic",
  );
  outputs.WorkerClusterName = output(
    "ECS cluster of the stream worker",
    ref("WorkerCluster"),
    "WorkerClusterName",
    "DeployWorker",
  );
  outputs.WorkerServiceName = output(
    "ECS service of the stream worker",
    getAtt("WorkerService", "Name"),
    "WorkerServiceName",
    "DeployWorker",
  );
  return outputs;
}

/**
 * Renders the zae-limiter CloudFormation template as a plain,
 * JSON-serialisable object. The function is pure: the same options always
 * give an equal template, and nothing is read from the environment.
 *
 * Parameters keep the reference stack's names (spec 06 §1.2) where the
 * concept still exists; Lambda parameters are replaced by `Worker*`
 * parameters for the ECS Fargate stream worker. `EnableIAMRoles` defaults to
 * `false`, like the library (weakness 16), and the table and the audit
 * archive bucket are retained when the stack is deleted (weakness 14).
 *
 * @param options Defaults baked into the template's parameters.
 * @returns The template.
 *
 * @example The table keeps the core schema and survives stack deletion
 * ```ts
 * import assert from "node:assert/strict";
 * import { renderTemplate } from "./template.ts";
 *
 * const template = renderTemplate();
 * const table = template.Resources.RateLimitsTable;
 * assert.equal(table?.Type, "AWS::DynamoDB::Table");
 * assert.equal(table?.DeletionPolicy, "Retain");
 * assert.equal(template.Parameters.EnableIAMRoles?.Default, "false");
 * assert.deepEqual(JSON.parse(JSON.stringify(template)), template);
 * ```
 */
export function renderTemplate(
  options: TemplateOptions = {},
): CloudFormationTemplate {
  const schemaVersion = options.schemaVersion ?? SCHEMA_VERSION;
  return {
    AWSTemplateFormatVersion: "2010-09-09",
    Description: options.description ??
      `zae-limiter distributed rate limiter (schema ${schemaVersion})`,
    Parameters: renderParameters(schemaVersion, options.workerImage ?? ""),
    Rules: renderRules(),
    Conditions: renderConditions(),
    Resources: {
      [TABLE]: renderTable(),
      ...renderIam(),
      ...renderArchive(),
      ...renderAlarms(),
      ...renderWorker(),
    },
    Outputs: renderOutputs(),
  };
}

/**
 * Renders the template (see {@linkcode renderTemplate}) as indented JSON
 * text ending in a newline, ready for `aws cloudformation deploy
 * --template-file` or `UpdateStack`. CloudFormation accepts JSON directly, so
 * no YAML is produced.
 *
 * @param options Defaults baked into the template's parameters.
 * @returns The template as JSON text.
 *
 * @example Parse the JSON back
 * ```ts
 * import assert from "node:assert/strict";
 * import { renderTemplate, renderTemplateJson } from "./template.ts";
 *
 * assert.deepEqual(JSON.parse(renderTemplateJson()), renderTemplate());
 * ```
 */
export function renderTemplateJson(options: TemplateOptions = {}): string {
  return `${JSON.stringify(renderTemplate(options), null, 2)}\n`;
}
