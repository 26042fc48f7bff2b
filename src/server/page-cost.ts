import { costLimitRule, type CostLimitOptions } from '@escape.tech/graphql-armor-cost-limit';
import { GraphQLError, Kind, validate, visit, type DocumentNode, type GraphQLSchema } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { GraphQLContext } from '../context.ts';
import { LEDGER_PAGE_DEFAULT, LEDGER_PAGE_MAX } from '../ledger/limits.ts';

// Armor counts `first: 100` as a hundred times its selection, but `first: $n` as once: it never
// sees variables. The same rule runs again once the variables are known, with each variable
// page size written into the document as the literal it stands for.
const PAGE_SIZE_ARGUMENTS = new Set(['first', 'last']);
const pageSizeVariables = new WeakMap<DocumentNode, boolean>();

function hasVariablePageSize(document: DocumentNode): boolean {
  let found = pageSizeVariables.get(document);
  if (found === undefined) {
    found = false;
    visit(document, {
      Argument(node) {
        if (PAGE_SIZE_ARGUMENTS.has(node.name.value) && node.value.kind === Kind.VARIABLE) found = true;
      },
    });
    pageSizeVariables.set(document, found);
  }
  return found;
}

/**
 * `document` with every page-size variable replaced by the page it asks for: its value (or its
 * declared default, or the API's default page when it has neither), at most the largest page the
 * API serves. A larger value is refused by the resolver as BAD_USER_INPUT naming the field
 * before any work, so it costs no more than the largest page.
 */
function withPageSizesInlined(
  document: DocumentNode,
  variables: Readonly<Record<string, unknown>> | null | undefined,
): DocumentNode {
  const defaults = new Map<string, unknown>();
  for (const definition of document.definitions) {
    if (definition.kind !== Kind.OPERATION_DEFINITION) continue;
    for (const variable of definition.variableDefinitions ?? []) {
      if (variable.defaultValue?.kind === Kind.INT)
        defaults.set(variable.variable.name.value, Number(variable.defaultValue.value));
    }
  }
  return visit(document, {
    Argument(node) {
      if (!PAGE_SIZE_ARGUMENTS.has(node.name.value) || node.value.kind !== Kind.VARIABLE) return undefined;
      const name = node.value.name.value;
      const given = variables && name in variables ? variables[name] : defaults.get(name);
      const value = given === undefined || given === null ? LEDGER_PAGE_DEFAULT : given;
      if (typeof value !== 'number' || !Number.isSafeInteger(value)) return undefined;
      return { ...node, value: { kind: Kind.INT, value: String(Math.min(value, LEDGER_PAGE_MAX)) } };
    },
  });
}

function variablePageCostErrors(
  rule: ReturnType<typeof costLimitRule>,
  schema: GraphQLSchema,
  document: DocumentNode,
  variables: Readonly<Record<string, unknown>> | null | undefined,
) {
  if (!hasVariablePageSize(document)) return [];
  return validate(schema, withPageSizesInlined(document, variables), [rule]).map(
    (error) =>
      new GraphQLError(error.message, { extensions: { code: 'GRAPHQL_VALIDATION_FAILED', http: { status: 400 } } }),
  );
}

/**
 * Armor's cost limit (the same `options` as its validation rule) again at execution, with page
 * sizes passed as variables counted at their value. Over the limit is the same validation error,
 * HTTP 400, before anything runs.
 */
export function useVariablePageCostLimit(options: CostLimitOptions): Plugin<GraphQLContext> {
  const rule = costLimitRule(options);
  return {
    onExecute({ args, setResultAndStopExecution }) {
      const errors = variablePageCostErrors(rule, args.schema, args.document, args.variableValues);
      if (errors.length > 0) setResultAndStopExecution({ errors });
    },
    onSubscribe({ args, setResultAndStopExecution }) {
      const errors = variablePageCostErrors(rule, args.schema, args.document, args.variableValues);
      if (errors.length > 0) setResultAndStopExecution({ errors });
    },
  };
}
