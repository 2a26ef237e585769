import assert from "node:assert/strict";
import { WORKER_RUN_ENV } from "../cli/worker.ts";
import {
  GSIS,
  KEY_ATTRIBUTES,
  LSIS,
  SCHEMA_VERSION,
  TTL_ATTRIBUTE,
} from "../core/schema.ts";
import {
  ACQUIRE_ACTIONS,
  FULL_ACCESS_ACTIONS,
  NAMESPACE_TAG_KEY,
  READ_ONLY_ACTIONS,
  RESERVED_NAMESPACE_READ_ACTIONS,
  TABLE_METADATA_ACTIONS,
  UNSCOPABLE_ACTIONS,
  WORKER_ACTIONS,
  WORKER_S3_ACTIONS,
  WORKER_STREAM_ACTIONS,
  WORKER_TABLE_ACTIONS,
} from "../infra/iam_actions.ts";
import {
  type CloudFormationResource,
  type CloudFormationTemplate,
  type JsonObject,
  type JsonValue,
  renderTemplate,
  renderTemplateJson,
} from "../infra/template.ts";

// ---------------------------------------------------------------------------
// Narrowing helpers: the template is typed as JSON, tests read into it.

function isObject(value: JsonValue | undefined): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function obj(value: JsonValue | undefined, what: string): JsonObject {
  if (!isObject(value)) {
    throw new TypeError(`Cannot read ${what}: not an object`);
  }
  return value;
}

function arr(value: JsonValue | undefined, what: string): readonly JsonValue[] {
  if (!Array.isArray(value)) {
    throw new TypeError(`Cannot read ${what}: not an array`);
  }
  return value;
}

function str(value: JsonValue | undefined, what: string): string {
  if (typeof value !== "string") {
    throw new TypeError(`Cannot read ${what}: not a string`);
  }
  return value;
}

function resource(
  template: CloudFormationTemplate,
  id: string,
): CloudFormationResource {
  const found = template.Resources[id];
  if (found === undefined) throw new TypeError(`Cannot find resource "${id}"`);
  return found;
}

function tableProperties(template: CloudFormationTemplate): JsonObject {
  return resource(template, "RateLimitsTable").Properties;
}

function statements(document: JsonValue | undefined): JsonObject[] {
  return arr(obj(document, "policy document").Statement, "Statement").map((s) =>
    obj(s, "statement")
  );
}

function actionsOf(statement: JsonObject): string[] {
  const action = statement.Action;
  return typeof action === "string"
    ? [action]
    : arr(action, "Action").map((a) => str(a, "action"));
}

function sorted(values: Iterable<string>): string[] {
  return [...values].sort();
}

const TABLE_ARN = { "Fn::GetAtt": ["RateLimitsTable", "Arn"] };
const TABLE_AND_INDEXES = [TABLE_ARN, {
  "Fn::Sub": "${RateLimitsTable.Arn}/index/*",
}];
const NAMESPACE_TAG = `\${aws:PrincipalTag/${NAMESPACE_TAG_KEY}}`;

const PSEUDO_PARAMETERS = new Set([
  "AWS::AccountId",
  "AWS::NoValue",
  "AWS::NotificationARNs",
  "AWS::Partition",
  "AWS::Region",
  "AWS::StackId",
  "AWS::StackName",
  "AWS::URLSuffix",
]);

/** The `Fn::GetAtt` attributes each resource type used here documents. */
const GET_ATT_ATTRIBUTES: Readonly<Record<string, readonly string[]>> = {
  "AWS::DynamoDB::Table": ["Arn", "StreamArn"],
  "AWS::S3::Bucket": ["Arn", "DomainName", "RegionalDomainName"],
  "AWS::IAM::Role": ["Arn", "RoleId"],
  "AWS::ECS::Service": ["Name", "ServiceArn"],
  "AWS::ECS::Cluster": ["Arn"],
  "AWS::SNS::Topic": ["TopicArn", "TopicName"],
};

// ---------------------------------------------------------------------------
// Reference walker: every Ref / Fn::GetAtt / Fn::Sub variable / condition
// use, with the conditions known to hold at that point.

interface Reference {
  readonly kind: "ref" | "getAtt" | "condition";
  readonly target: string;
  readonly attribute?: string;
  readonly where: string;
  /** Conditions known to hold ("!X" for a false branch). */
  readonly holding: ReadonlySet<string>;
}

function subVariables(text: string): string[] {
  return [...text.matchAll(/\$\{(?!!)([^}]+)\}/g)].map((m) => m[1] ?? "");
}

function collect(
  value: JsonValue | undefined,
  where: string,
  holding: ReadonlySet<string>,
  out: Reference[],
): void {
  if (Array.isArray(value)) {
    value.forEach((item, i) => collect(item, `${where}[${i}]`, holding, out));
    return;
  }
  if (!isObject(value)) return;
  const keys = Object.keys(value);
  if (keys.length === 1 && keys[0] === "Ref") {
    out.push({ kind: "ref", target: str(value.Ref, where), where, holding });
    return;
  }
  if (keys.length === 1 && keys[0] === "Fn::GetAtt") {
    const [target, attribute] = arr(value["Fn::GetAtt"], where).map((v) =>
      str(v, where)
    );
    out.push({
      kind: "getAtt",
      target: target ?? "",
      attribute: attribute ?? "",
      where,
      holding,
    });
    return;
  }
  if (keys.length === 1 && keys[0] === "Fn::Sub") {
    for (const variable of subVariables(str(value["Fn::Sub"], where))) {
      // Policy variables such as ${aws:PrincipalTag/...} never sit inside Fn::Sub here.
      assert.ok(
        !variable.startsWith("aws:"),
        `${where}: IAM policy variable inside Fn::Sub`,
      );
      const [target = "", attribute] = variable.split(".");
      out.push(
        attribute === undefined
          ? { kind: "ref", target, where, holding }
          : { kind: "getAtt", target, attribute, where, holding },
      );
    }
    return;
  }
  if (keys.length === 1 && keys[0] === "Fn::If") {
    const [name, whenTrue, whenFalse] = arr(value["Fn::If"], where);
    const condition = str(name, where);
    out.push({ kind: "condition", target: condition, where, holding });
    collect(
      whenTrue,
      `${where}.If(${condition})`,
      new Set([...holding, condition]),
      out,
    );
    collect(
      whenFalse,
      `${where}.If(!${condition})`,
      new Set([...holding, `!${condition}`]),
      out,
    );
    return;
  }
  if (keys.length === 1 && keys[0] === "Condition") {
    out.push({
      kind: "condition",
      target: str(value.Condition, where),
      where,
      holding,
    });
    return;
  }
  for (const [key, member] of Object.entries(value)) {
    collect(member, `${where}.${key}`, holding, out);
  }
}

function allReferences(template: CloudFormationTemplate): Reference[] {
  const out: Reference[] = [];
  const none = new Set<string>();
  for (const [name, rule] of Object.entries(template.Rules)) {
    collect(rule.RuleCondition, `Rules.${name}.RuleCondition`, none, out);
    rule.Assertions.forEach((a, i) =>
      collect(a.Assert, `Rules.${name}.Assertions[${i}]`, none, out)
    );
  }
  for (const [name, condition] of Object.entries(template.Conditions)) {
    collect(condition, `Conditions.${name}`, none, out);
  }
  for (const [id, res] of Object.entries(template.Resources)) {
    const holding = new Set(res.Condition ? [res.Condition] : []);
    if (res.Condition) {
      out.push({
        kind: "condition",
        target: res.Condition,
        where: `Resources.${id}`,
        holding,
      });
    }
    collect(res.Properties, `Resources.${id}.Properties`, holding, out);
  }
  for (const [name, output] of Object.entries(template.Outputs)) {
    const holding = new Set(output.Condition ? [output.Condition] : []);
    if (output.Condition) {
      out.push({
        kind: "condition",
        target: output.Condition,
        where: `Outputs.${name}`,
        holding,
      });
    }
    collect(output.Value, `Outputs.${name}.Value`, holding, out);
    collect(output.Export.Name, `Outputs.${name}.Export`, holding, out);
  }
  return out;
}

/** Adds the conjuncts of every holding `Fn::And` condition, transitively. */
function closeConditions(
  template: CloudFormationTemplate,
  holding: ReadonlySet<string>,
): Set<string> {
  const closed = new Set(holding);
  let grew = true;
  while (grew) {
    grew = false;
    for (const name of [...closed]) {
      const definition = template.Conditions[name];
      if (!isObject(definition) || !("Fn::And" in definition)) continue;
      for (const part of arr(definition["Fn::And"], name)) {
        const partObject = obj(part, name);
        let implied: string | undefined;
        if ("Condition" in partObject) {
          implied = str(partObject.Condition, name);
        }
        if ("Fn::Not" in partObject) {
          const negated = obj(arr(partObject["Fn::Not"], name)[0], name);
          if ("Condition" in negated) {
            implied = `!${str(negated.Condition, name)}`;
          }
        }
        if (implied !== undefined && !closed.has(implied)) {
          closed.add(implied);
          grew = true;
        }
      }
    }
  }
  return closed;
}

// ---------------------------------------------------------------------------
// Serialisation

Deno.test("renderTemplate() returns plain JSON data when serialised and parsed back", () => {
  const template = renderTemplate();
  assert.deepEqual(JSON.parse(JSON.stringify(template)), template);
  assert.equal(template.AWSTemplateFormatVersion, "2010-09-09");
});

Deno.test("renderTemplateJson() returns the same template as indented JSON text", () => {
  const json = renderTemplateJson({ workerImage: "registry.example/worker:1" });
  assert.deepEqual(
    JSON.parse(json),
    renderTemplate({ workerImage: "registry.example/worker:1" }),
  );
  assert.ok(json.endsWith("}\n"));
  assert.ok(json.includes('\n  "Resources": {'));
});

Deno.test("renderTemplate() returns equal, independent templates when called twice", () => {
  const first = renderTemplate();
  const second = renderTemplate();
  assert.deepEqual(first, second);
  assert.notEqual(first.Resources, second.Resources);
});

// ---------------------------------------------------------------------------
// Table (spec 01 §1, derived from core/schema.ts)

Deno.test("renderTemplate() declares the 15 key attributes as strings when rendering the table", () => {
  const definitions = arr(
    tableProperties(renderTemplate()).AttributeDefinitions,
    "AttributeDefinitions",
  );
  assert.equal(KEY_ATTRIBUTES.length, 15);
  assert.deepEqual(
    sorted(
      definitions.map((d) =>
        str(obj(d, "definition").AttributeName, "AttributeName")
      ),
    ),
    sorted(KEY_ATTRIBUTES),
  );
  for (const d of definitions) {
    assert.equal(obj(d, "definition").AttributeType, "S");
  }
});

Deno.test("renderTemplate() keys the table on PK/SK with on-demand billing when rendering the table", () => {
  const table = tableProperties(renderTemplate());
  assert.deepEqual(table.TableName, { Ref: "AWS::StackName" });
  assert.equal(table.BillingMode, "PAY_PER_REQUEST");
  assert.deepEqual(table.KeySchema, [
    { AttributeName: "PK", KeyType: "HASH" },
    { AttributeName: "SK", KeyType: "RANGE" },
  ]);
  assert.equal(table.ProvisionedThroughput, undefined);
});

Deno.test("renderTemplate() declares GSI1-4 with their schema projections when rendering the table", () => {
  const indexes = arr(
    tableProperties(renderTemplate()).GlobalSecondaryIndexes,
    "GSIs",
  ).map((g) => obj(g, "GSI"));
  assert.deepEqual(indexes.map((g) => g.IndexName), [
    "GSI1",
    "GSI2",
    "GSI3",
    "GSI4",
  ]);
  assert.deepEqual(indexes.map((g) => g.IndexName), GSIS.map((g) => g.name));
  const expectedProjection: Record<string, string> = {
    GSI1: "ALL",
    GSI2: "ALL",
    GSI3: "KEYS_ONLY",
    GSI4: "KEYS_ONLY",
  };
  for (const gsi of GSIS) {
    const index = indexes.find((g) => g.IndexName === gsi.name);
    assert.ok(index, gsi.name);
    assert.deepEqual(index.KeySchema, [
      { AttributeName: `${gsi.name}PK`, KeyType: "HASH" },
      { AttributeName: `${gsi.name}SK`, KeyType: "RANGE" },
    ]);
    assert.deepEqual(index.Projection, { ProjectionType: gsi.projection });
    assert.equal(gsi.projection, expectedProjection[gsi.name]);
  }
});

Deno.test("renderTemplate() declares LSI1-5 with odd ALL and even KEYS_ONLY when rendering the table", () => {
  const indexes = arr(
    tableProperties(renderTemplate()).LocalSecondaryIndexes,
    "LSIs",
  ).map((l) => obj(l, "LSI"));
  assert.deepEqual(indexes.map((l) => l.IndexName), [
    "LSI1",
    "LSI2",
    "LSI3",
    "LSI4",
    "LSI5",
  ]);
  assert.deepEqual(indexes.map((l) => l.IndexName), LSIS.map((l) => l.name));
  for (const [i, lsi] of LSIS.entries()) {
    const index = indexes.find((l) => l.IndexName === lsi.name);
    assert.ok(index, lsi.name);
    assert.deepEqual(index.KeySchema, [
      { AttributeName: "PK", KeyType: "HASH" },
      { AttributeName: `${lsi.name}SK`, KeyType: "RANGE" },
    ]);
    const odd = (i + 1) % 2 === 1;
    assert.deepEqual(index.Projection, {
      ProjectionType: odd ? "ALL" : "KEYS_ONLY",
    });
    assert.deepEqual(index.Projection, { ProjectionType: lsi.projection });
  }
});

Deno.test("renderTemplate() enables TTL, streams and PITR when rendering the table", () => {
  const table = tableProperties(renderTemplate());
  assert.equal(TTL_ATTRIBUTE, "ttl");
  assert.deepEqual(table.TimeToLiveSpecification, {
    AttributeName: "ttl",
    Enabled: true,
  });
  assert.deepEqual(table.StreamSpecification, {
    StreamViewType: "NEW_AND_OLD_IMAGES",
  });
  assert.deepEqual(table.PointInTimeRecoverySpecification, {
    PointInTimeRecoveryEnabled: true,
    RecoveryPeriodInDays: {
      "Fn::If": ["HasPITRRecoveryPeriod", { Ref: "PITRRecoveryPeriodDays" }, {
        Ref: "AWS::NoValue",
      }],
    },
  });
  assert.deepEqual(table.DeletionProtectionEnabled, {
    Ref: "EnableDeletionProtection",
  });
});

Deno.test("renderTemplate() retains the table when the stack is deleted or the table replaced", () => {
  const table = resource(renderTemplate(), "RateLimitsTable");
  assert.equal(table.Type, "AWS::DynamoDB::Table");
  assert.equal(table.DeletionPolicy, "Retain");
  assert.equal(table.UpdateReplacePolicy, "Retain");
  assert.equal(table.Condition, undefined);
});

// ---------------------------------------------------------------------------
// Parameters, references and conditions

Deno.test("renderTemplate() keeps the reference parameter names and library defaults", () => {
  const { Parameters } = renderTemplate();
  const expectedDefaults: Record<string, string> = {
    SnapshotWindows: "hourly,daily",
    SnapshotRetentionDays: "90",
    SchemaVersion: SCHEMA_VERSION,
    PITRRecoveryPeriodDays: "",
    EnableAlarms: "true",
    AlarmSNSTopicArn: "",
    LogRetentionDays: "30",
    PermissionBoundary: "",
    AppRoleName: "",
    AdminRoleName: "",
    ReadOnlyRoleName: "",
    AcquireOnlyPolicyName: "",
    FullAccessPolicyName: "",
    ReadOnlyPolicyName: "",
    NamespaceAcquirePolicyName: "",
    NamespaceFullAccessPolicyName: "",
    NamespaceReadOnlyPolicyName: "",
    EnableAuditArchival: "true",
    AuditArchiveGlacierTransitionDays: "90",
    EnableIAMRoles: "false",
    EnableIAM: "true",
    EnableDeletionProtection: "false",
    WorkerImage: "",
  };
  for (const [name, value] of Object.entries(expectedDefaults)) {
    assert.equal(Parameters[name]?.Default, value, name);
  }
});

Deno.test("renderTemplate() gives every parameter a default its own constraints accept", () => {
  for (const [name, parameter] of Object.entries(renderTemplate().Parameters)) {
    const value = parameter.Default;
    if (parameter.AllowedValues) {
      assert.ok(parameter.AllowedValues.includes(value), name);
    }
    if (parameter.AllowedPattern) {
      assert.match(value, new RegExp(parameter.AllowedPattern), name);
    }
    if (parameter.Type === "Number") {
      assert.ok(Number.isFinite(Number(value)), name);
      if (parameter.MinValue !== undefined) {
        assert.ok(Number(value) >= parameter.MinValue, name);
      }
      if (parameter.MaxValue !== undefined) {
        assert.ok(Number(value) <= parameter.MaxValue, name);
      }
    }
  }
});

Deno.test("renderTemplate() applies the options to description and parameter defaults when given", () => {
  const template = renderTemplate({
    description: "custom",
    schemaVersion: "1.2.3",
    workerImage: "img:1",
  });
  assert.equal(template.Description, "custom");
  assert.equal(template.Parameters.SchemaVersion?.Default, "1.2.3");
  assert.equal(template.Parameters.WorkerImage?.Default, "img:1");
  assert.match(
    renderTemplate().Description,
    new RegExp(SCHEMA_VERSION.replaceAll(".", "\\.")),
  );
});

Deno.test("renderTemplate() references only declared parameters, resources and pseudo-parameters", () => {
  const template = renderTemplate();
  const references = allReferences(template).filter((r) =>
    r.kind !== "condition"
  );
  assert.ok(references.length > 50);
  for (const reference of references) {
    if (reference.kind === "ref") {
      const known = reference.target in template.Parameters ||
        reference.target in template.Resources ||
        PSEUDO_PARAMETERS.has(reference.target);
      assert.ok(
        known,
        `${reference.where}: Ref to undeclared "${reference.target}"`,
      );
      if (reference.where.startsWith("Rules.")) {
        assert.ok(
          reference.target in template.Parameters,
          `${reference.where}: rules may only Ref parameters`,
        );
      }
    } else {
      const target = template.Resources[reference.target];
      assert.ok(
        target,
        `${reference.where}: GetAtt on undeclared resource "${reference.target}"`,
      );
      const attributes = GET_ATT_ATTRIBUTES[target.Type] ?? [];
      assert.ok(
        attributes.includes(reference.attribute ?? ""),
        `${reference.where}: ${target.Type} has no attribute "${reference.attribute}"`,
      );
    }
  }
});

Deno.test("renderTemplate() uses only declared conditions", () => {
  const template = renderTemplate();
  const uses = allReferences(template).filter((r) => r.kind === "condition");
  assert.ok(uses.length > 20);
  for (const use of uses) {
    assert.ok(
      use.target in template.Conditions,
      `${use.where}: undeclared condition "${use.target}"`,
    );
  }
  for (const name of Object.keys(template.Conditions)) {
    assert.ok(
      uses.some((u) => u.target === name),
      `condition "${name}" is never used`,
    );
  }
});

Deno.test("renderTemplate() references a conditional resource only where its condition holds", () => {
  const template = renderTemplate();
  for (const reference of allReferences(template)) {
    if (reference.kind === "condition") continue;
    const needed = template.Resources[reference.target]?.Condition;
    if (needed === undefined) continue;
    const holding = closeConditions(template, reference.holding);
    assert.ok(
      holding.has(needed),
      `${reference.where}: "${reference.target}" needs condition "${needed}", holding [${[
        ...holding,
      ]}]`,
    );
  }
});

// ---------------------------------------------------------------------------
// IAM (spec 06 §1.5-1.6, weakness 41)

const TABLE_POLICIES = [
  ["AcquireOnlyPolicy", ACQUIRE_ACTIONS],
  ["FullAccessPolicy", FULL_ACCESS_ACTIONS],
  ["ReadOnlyPolicy", READ_ONLY_ACTIONS],
] as const;

const NAMESPACE_POLICIES = [
  ["NamespaceAcquirePolicy", ACQUIRE_ACTIONS],
  ["NamespaceFullAccessPolicy", FULL_ACCESS_ACTIONS],
  ["NamespaceReadOnlyPolicy", READ_ONLY_ACTIONS],
] as const;

Deno.test("renderTemplate() grants each table-level policy exactly its action list on the table and indexes", () => {
  const template = renderTemplate();
  for (const [id, expected] of TABLE_POLICIES) {
    const policy = resource(template, id);
    assert.equal(policy.Type, "AWS::IAM::ManagedPolicy");
    assert.equal(policy.Condition, "IAMEnabled");
    const [statement, ...rest] = statements(policy.Properties.PolicyDocument);
    assert.equal(rest.length, 0, id);
    assert.ok(statement);
    assert.equal(statement.Effect, "Allow");
    assert.deepEqual(sorted(actionsOf(statement)), sorted(expected), id);
    assert.equal(
      new Set(actionsOf(statement)).size,
      expected.length,
      `${id} repeats an action`,
    );
    assert.deepEqual(statement.Resource, TABLE_AND_INDEXES, id);
    assert.equal(statement.Condition, undefined, id);
  }
});

Deno.test("renderTemplate() grants each namespace policy its action list under LeadingKeys conditions", () => {
  const template = renderTemplate();
  for (const [id, tableLevel] of NAMESPACE_POLICIES) {
    const policy = resource(template, id);
    assert.equal(policy.Condition, "IAMEnabled");
    const all = statements(policy.Properties.PolicyDocument);
    for (const s of all) assert.equal(s.Effect, "Allow", id);
    // No more, no less: the table-level list without Scan (unscopable, see iam_actions.ts).
    const granted = new Set(all.flatMap(actionsOf));
    assert.deepEqual(
      sorted(granted),
      sorted(tableLevel.filter((a) => a !== "dynamodb:Scan")),
      id,
    );

    const items = all.find((s) => s.Sid === "NamespaceItems");
    assert.ok(items, id);
    const unscopable: readonly string[] = UNSCOPABLE_ACTIONS;
    assert.deepEqual(
      sorted(actionsOf(items)),
      sorted(tableLevel.filter((a) => !unscopable.includes(a))),
      id,
    );
    assert.deepEqual(items.Resource, TABLE_AND_INDEXES, id);
    assert.deepEqual(
      obj(items.Condition, "Condition")["ForAllValues:StringLike"],
      {
        "dynamodb:LeadingKeys": [`${NAMESPACE_TAG}/*`],
      },
    );

    const gsi4 = all.find((s) => s.Sid === "NamespaceIndex");
    assert.ok(gsi4, id);
    assert.deepEqual(actionsOf(gsi4), ["dynamodb:Query"]);
    assert.deepEqual(gsi4.Resource, [{
      "Fn::Sub": "${RateLimitsTable.Arn}/index/GSI4",
    }]);
    assert.deepEqual(
      obj(gsi4.Condition, "Condition")["ForAllValues:StringEquals"],
      {
        "dynamodb:LeadingKeys": [NAMESPACE_TAG],
      },
    );

    // Every statement that grants item access is restricted by LeadingKeys.
    const metadata: readonly string[] = TABLE_METADATA_ACTIONS;
    for (const s of all) {
      const itemActions = actionsOf(s).filter((a) => !metadata.includes(a));
      if (itemActions.length === 0) {
        assert.deepEqual(
          s.Resource,
          [TABLE_ARN],
          `${id}: metadata on the table only`,
        );
        continue;
      }
      const condition = obj(s.Condition, `${id} ${String(s.Sid)} Condition`);
      const leading = Object.entries(condition).filter(([op, body]) =>
        op.startsWith("ForAllValues:") && isObject(body) &&
        "dynamodb:LeadingKeys" in body
      );
      assert.equal(
        leading.length,
        1,
        `${id} ${String(s.Sid)} lacks a LeadingKeys condition`,
      );
    }

    const reserved = all.find((s) => s.Sid === "ReservedNamespaceReads");
    assert.ok(reserved, id);
    assert.deepEqual(
      sorted(actionsOf(reserved)),
      sorted(RESERVED_NAMESPACE_READ_ACTIONS),
    );
    assert.deepEqual(reserved.Condition, {
      "ForAllValues:StringLike": { "dynamodb:LeadingKeys": ["_/*"] },
    });
  }
});

Deno.test("renderTemplate() never grants Scan to a namespace-scoped principal", () => {
  const template = renderTemplate();
  for (const [id] of NAMESPACE_POLICIES) {
    const granted = statements(resource(template, id).Properties.PolicyDocument)
      .flatMap(actionsOf);
    assert.ok(!granted.includes("dynamodb:Scan"), id);
  }
});

Deno.test("renderTemplate() lets both acquire policies issue every acquire-path command", () => {
  // The DynamoDB commands the acquire path sends (weakness 41).
  const acquirePath = [
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:TransactWriteItems",
  ];
  assert.deepEqual(sorted(ACQUIRE_ACTIONS), sorted(acquirePath));
  const template = renderTemplate();
  for (const id of ["AcquireOnlyPolicy", "NamespaceAcquirePolicy"]) {
    const granted = new Set(
      statements(resource(template, id).Properties.PolicyDocument).flatMap(
        actionsOf,
      ),
    );
    for (const action of acquirePath) {
      assert.ok(granted.has(action), `${id} lacks ${action}`);
    }
    assert.ok(
      !granted.has("dynamodb:DescribeTable"),
      `${id} grants DescribeTable`,
    );
  }
});

Deno.test("renderTemplate() names the managed policies from parameters or {stack}-suffix defaults", () => {
  const template = renderTemplate();
  const suffixes: Record<string, string> = {
    AcquireOnlyPolicy: "acq",
    FullAccessPolicy: "full",
    ReadOnlyPolicy: "read",
    NamespaceAcquirePolicy: "ns-acq",
    NamespaceFullAccessPolicy: "ns-full",
    NamespaceReadOnlyPolicy: "ns-read",
  };
  for (const [id, suffix] of Object.entries(suffixes)) {
    const parameter = `${id}Name`;
    assert.ok(parameter in template.Parameters, parameter);
    assert.deepEqual(resource(template, id).Properties.ManagedPolicyName, {
      "Fn::If": [`Has${parameter}`, { Ref: parameter }, {
        "Fn::Sub": `\${AWS::StackName}-${suffix}`,
      }],
    });
  }
});

Deno.test("renderTemplate() creates the opt-in roles only under DeployIAMRolesWithIAM", () => {
  const template = renderTemplate();
  const attached: Record<string, string> = {
    AppRole: "AcquireOnlyPolicy",
    AdminRole: "FullAccessPolicy",
    ReadOnlyRole: "ReadOnlyPolicy",
  };
  for (const [id, policy] of Object.entries(attached)) {
    const role = resource(template, id);
    assert.equal(role.Condition, "DeployIAMRolesWithIAM");
    assert.deepEqual(role.Properties.ManagedPolicyArns, [{ Ref: policy }]);
  }
  assert.deepEqual(template.Conditions.DeployIAMRolesWithIAM, {
    "Fn::And": [{ "Fn::Equals": [{ Ref: "EnableIAMRoles" }, "true"] }, {
      Condition: "IAMEnabled",
    }],
  });
});

// ---------------------------------------------------------------------------
// Archive bucket, alarms

Deno.test("renderTemplate() makes the audit archive bucket encrypted, private and Glacier-bound", () => {
  const template = renderTemplate();
  const bucket = resource(template, "AuditArchiveBucket");
  assert.equal(bucket.Type, "AWS::S3::Bucket");
  assert.equal(bucket.Condition, "DeployAuditArchive");
  assert.deepEqual(bucket.Properties.BucketEncryption, {
    ServerSideEncryptionConfiguration: [{
      ServerSideEncryptionByDefault: { SSEAlgorithm: "AES256" },
    }],
  });
  assert.deepEqual(bucket.Properties.PublicAccessBlockConfiguration, {
    BlockPublicAcls: true,
    BlockPublicPolicy: true,
    IgnorePublicAcls: true,
    RestrictPublicBuckets: true,
  });
  const [rule] = arr(
    obj(bucket.Properties.LifecycleConfiguration, "Lifecycle").Rules,
    "Rules",
  );
  assert.deepEqual(obj(rule, "rule").Transitions, [
    {
      StorageClass: "GLACIER_IR",
      TransitionInDays: { Ref: "AuditArchiveGlacierTransitionDays" },
    },
  ]);
  assert.deepEqual(template.Conditions.DeployAuditArchive, {
    "Fn::Equals": [{ Ref: "EnableAuditArchival" }, "true"],
  });
});

Deno.test("renderTemplate() creates alarms and the SNS topic only under their conditions", () => {
  const template = renderTemplate();
  const alarms = Object.entries(template.Resources).filter(([, r]) =>
    r.Type === "AWS::CloudWatch::Alarm"
  );
  assert.ok(alarms.length >= 3);
  for (const [id, alarm] of alarms) {
    assert.ok(alarm.Condition, `${id} is unconditional`);
    assert.ok(
      closeConditions(template, new Set([alarm.Condition])).has(
        "AlarmsEnabled",
      ),
      id,
    );
    assert.equal(typeof alarm.Properties.TreatMissingData, "string", id);
    assert.deepEqual(alarm.Properties.AlarmActions, {
      "Fn::If": ["CreateAlarmTopic", [{ Ref: "AlarmTopic" }], [{
        Ref: "AlarmSNSTopicArn",
      }]],
    });
  }
  const topic = resource(template, "AlarmTopic");
  assert.equal(topic.Type, "AWS::SNS::Topic");
  assert.equal(topic.Condition, "CreateAlarmTopic");
  assert.deepEqual(template.Conditions.CreateAlarmTopic, {
    "Fn::And": [{ Condition: "AlarmsEnabled" }, {
      "Fn::Not": [{ Condition: "HasAlarmSNSTopicArn" }],
    }],
  });
});

// ---------------------------------------------------------------------------
// ECS worker

const WORKER_RESOURCE_TYPES = new Set([
  "AWS::ECS::Cluster",
  "AWS::ECS::TaskDefinition",
  "AWS::ECS::Service",
  "AWS::Logs::LogGroup",
]);

Deno.test("renderTemplate() declares the ECS worker only under DeployWorker when WorkerImage is set", () => {
  const template = renderTemplate();
  assert.deepEqual(template.Conditions.DeployWorker, {
    "Fn::Not": [{ "Fn::Equals": [{ Ref: "WorkerImage" }, ""] }],
  });
  const worker = Object.entries(template.Resources).filter(([id, r]) =>
    WORKER_RESOURCE_TYPES.has(r.Type) || id.startsWith("Worker")
  );
  assert.deepEqual(
    sorted(worker.map(([id]) => id)),
    sorted([
      "WorkerCluster",
      "WorkerExecutionRole",
      "WorkerLogGroup",
      "WorkerNotRunningAlarm",
      "WorkerService",
      "WorkerTaskDefinition",
      "WorkerTaskRole",
    ]),
  );
  for (const [id, r] of worker) {
    assert.ok(r.Condition, `${id} is unconditional`);
    assert.ok(
      closeConditions(template, new Set([r.Condition])).has("DeployWorker"),
      id,
    );
  }
  const taskDefinition = resource(template, "WorkerTaskDefinition").Properties;
  assert.deepEqual(taskDefinition.RequiresCompatibilities, ["FARGATE"]);
  const [container] = arr(
    taskDefinition.ContainerDefinitions,
    "ContainerDefinitions",
  );
  assert.deepEqual(obj(container, "container").Image, { Ref: "WorkerImage" });
  assert.equal(
    resource(template, "WorkerService").Properties.LaunchType,
    "FARGATE",
  );
});

Deno.test("renderTemplate() rejects a worker without IAM or subnets through template rules", () => {
  const rule = renderTemplate().Rules.WorkerRequirements;
  assert.ok(rule);
  assert.deepEqual(rule.RuleCondition, {
    "Fn::Not": [{ "Fn::Equals": [{ Ref: "WorkerImage" }, ""] }],
  });
  const asserted = JSON.stringify(rule.Assertions.map((a) => a.Assert));
  assert.ok(asserted.includes('"EnableIAM"'));
  assert.ok(asserted.includes('"WorkerSubnetIds"'));
});

Deno.test("renderTemplate() grants the worker task role exactly the stream, table and S3 actions", () => {
  const template = renderTemplate();
  const role = resource(template, "WorkerTaskRole").Properties;
  const [inline, ...more] = arr(role.Policies, "Policies");
  assert.equal(more.length, 0);
  const raw = arr(
    obj(obj(inline, "policy").PolicyDocument, "document").Statement,
    "Statement",
  );
  // The S3 statement is wrapped in Fn::If DeployAuditArchive.
  const conditional = raw.map((s) => obj(s, "statement")).filter((s) =>
    "Fn::If" in s
  );
  assert.equal(conditional.length, 1);
  const [archiveCondition, archive, otherwise] = arr(
    conditional[0]?.["Fn::If"],
    "Fn::If",
  );
  assert.equal(archiveCondition, "DeployAuditArchive");
  assert.deepEqual(otherwise, { Ref: "AWS::NoValue" });
  const plain = raw.map((s) => obj(s, "statement")).filter((s) =>
    !("Fn::If" in s)
  );

  const stream = plain.find((s) => s.Sid === "ReadStream");
  assert.ok(stream);
  assert.deepEqual(sorted(actionsOf(stream)), sorted(WORKER_STREAM_ACTIONS));
  assert.deepEqual(stream.Resource, [{
    "Fn::Sub": "${RateLimitsTable.Arn}/stream/*",
  }]);
  const table = plain.find((s) => s.Sid === "TableItems");
  assert.ok(table);
  assert.deepEqual(sorted(actionsOf(table)), sorted(WORKER_TABLE_ACTIONS));
  assert.deepEqual(table.Resource, TABLE_AND_INDEXES);
  assert.equal(plain.length, 2);

  const granted = sorted(plain.flatMap(actionsOf));
  assert.deepEqual(granted, sorted(WORKER_ACTIONS));
  const s3 = obj(archive, "archive statement");
  assert.deepEqual(actionsOf(s3), [...WORKER_S3_ACTIONS]);
  assert.deepEqual(s3.Resource, [{ "Fn::Sub": "${AuditArchiveBucket.Arn}/*" }]);
  assert.equal(role.ManagedPolicyArns, undefined);
});

Deno.test("renderTemplate() passes the table, workloads, windows and archive to the worker container as the CLI's env defaults", () => {
  const template = renderTemplate();
  const [container] = arr(
    resource(template, "WorkerTaskDefinition").Properties.ContainerDefinitions,
    "containers",
  );
  const env = new Map(
    arr(obj(container, "container").Environment, "Environment").map((e) => {
      const entry = obj(e, "env");
      return [str(entry.Name, "Name"), entry.Value] as const;
    }),
  );
  assert.deepEqual(env.get("ZAEL_STACK"), { Ref: "RateLimitsTable" });
  assert.deepEqual(env.get("ZAEL_WORKLOADS"), {
    "Fn::If": ["DeployAuditArchive", "aggregator,archiver", "aggregator"],
  });
  assert.deepEqual(env.get("ZAEL_ARCHIVE_BUCKET"), {
    "Fn::If": ["DeployAuditArchive", { Ref: "AuditArchiveBucket" }, ""],
  });
  assert.deepEqual(env.get("ZAEL_SNAPSHOT_WINDOWS"), {
    Ref: "SnapshotWindows",
  });
  assert.deepEqual(env.get("ZAEL_SNAPSHOT_RETENTION_DAYS"), {
    Ref: "SnapshotRetentionDays",
  });
  // Every variable is one `worker run` reads (ZAEL_STACK is --name, read by cli.ts).
  for (const name of env.keys()) {
    if (name === "ZAEL_STACK") continue;
    assert.ok(name in WORKER_RUN_ENV, `worker run ignores ${name}`);
  }
});

// ---------------------------------------------------------------------------
// Outputs

Deno.test("renderTemplate() outputs table, stream, policy and bucket identifiers", () => {
  const { Outputs } = renderTemplate();
  assert.deepEqual(Outputs.TableName?.Value, { Ref: "RateLimitsTable" });
  assert.deepEqual(Outputs.TableArn?.Value, TABLE_ARN);
  assert.deepEqual(Outputs.StreamArn?.Value, {
    "Fn::GetAtt": ["RateLimitsTable", "StreamArn"],
  });
  for (const [id] of [...TABLE_POLICIES, ...NAMESPACE_POLICIES]) {
    const output = Outputs[`${id}Arn`];
    assert.ok(output, id);
    assert.deepEqual(output.Value, { Ref: id });
    assert.equal(output.Condition, "IAMEnabled");
  }
  assert.deepEqual(Outputs.AuditArchiveBucketName?.Value, {
    Ref: "AuditArchiveBucket",
  });
  assert.equal(Outputs.AuditArchiveBucketName?.Condition, "DeployAuditArchive");
  for (const [name, output] of Object.entries(Outputs)) {
    assert.deepEqual(output.Export.Name, {
      "Fn::Sub": `\${AWS::StackName}-${name}`,
    }, name);
  }
});

Deno.test("main() cfn-template prints exactly the template the structural tests check", async () => {
  const { main } = await import("../cli.ts");
  let out = "";
  const code = await main(["cfn-template"], {
    out: (t: string) => {
      out += t + "\n";
    },
    err: () => {},
  });
  assert.equal(code, 0);
  assert.deepEqual(
    JSON.parse(out),
    JSON.parse(JSON.stringify(renderTemplate())),
  );
});
