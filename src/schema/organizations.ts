import type { GraphQLContext } from '../context.ts';
import { findPlan } from '../ledger/catalog.ts';
import { IdempotencyConflictError, InvalidInputError, NotFoundError } from '../ledger/errors.ts';
import {
  changePlan,
  createOrganization,
  findOrganization,
  type Organization,
  type PlanChange,
} from '../ledger/organizations.ts';
import { allow, asQueryInput, authorizeOrganization } from './authorization.ts';
import { BalanceType, loadBalance } from './balance.ts';
import { builder } from './builder.ts';
import { PlanType } from './catalog.ts';

/** An organization's plan; the foreign key makes a missing one a bug, reported as an internal error. */
async function requirePlan(ctx: GraphQLContext, id: string) {
  const plan = await findPlan(ctx.db, id);
  if (!plan) throw new Error(`plan ${id} is missing`);
  return plan;
}

export const OrganizationType = builder.objectRef<Organization>('Organization').implement({
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    plan: t.field({ type: PlanType, resolve: (org, _args, ctx) => requirePlan(ctx, org.planId) }),
    nextPlan: t.field({
      type: PlanType,
      nullable: true,
      description: 'A plan change that takes effect at the start of the next billing cycle.',
      resolve: (org, _args, ctx) => (org.nextPlanId ? requirePlan(ctx, org.nextPlanId) : null),
    }),
    billingCycleAnchor: t.field({ type: 'DateTime', resolve: (org) => org.billingCycleAnchor }),
    currentCycleStartsAt: t.field({ type: 'DateTime', resolve: (org) => org.cycleStartsAt }),
    currentCycleEndsAt: t.field({
      type: 'DateTime',
      description: 'When unused subscription credits expire and the next allowance is granted.',
      resolve: (org) => org.cycleEndsAt,
    }),
    createdAt: t.field({ type: 'DateTime', resolve: (org) => org.createdAt }),
    balance: t.field({ type: BalanceType, resolve: (org, _args, ctx) => loadBalance(ctx, org.id) }),
  }),
});

const CreateOrganizationSuccess = builder
  .objectRef<{ organization: Organization }>('CreateOrganizationSuccess')
  .implement({
    fields: (t) => ({ organization: t.field({ type: OrganizationType, resolve: (payload) => payload.organization }) }),
  });

const ChangePlanSuccess = builder.objectRef<PlanChange>('ChangePlanSuccess').implement({
  fields: (t) => ({
    organization: t.field({ type: OrganizationType, resolve: (change) => change.organization }),
    appliedImmediately: t.exposeBoolean('appliedImmediately', {
      description: 'True when the plan is in force now; false when it takes effect at the next billing cycle.',
    }),
    effectiveAt: t.field({
      type: 'DateTime',
      description: 'When the plan takes (or took) effect.',
      resolve: (change) => change.effectiveAt,
    }),
  }),
});

const CreateOrganizationInput = builder.inputType('CreateOrganizationInput', {
  fields: (t) => ({
    name: t.string({ required: true }),
    planId: t.id({ required: true }),
    billingCycleAnchor: t.field({
      type: 'DateTime',
      required: false,
      description: 'Billing cycles start at this instant plus whole months (default: now).',
    }),
    externalId: t.string({
      required: false,
      description:
        "The customer's id in the host application (unique). A repeat returns the organization it created; the same id with another name, plan or anchor is an IdempotencyConflictError.",
    }),
  }),
});

const ChangePlanInput = builder.inputType('ChangePlanInput', {
  fields: (t) => ({
    organizationId: t.id({ required: true }),
    planId: t.id({ required: true }),
    immediately: t.boolean({
      required: false,
      defaultValue: false,
      description:
        'Apply an upgrade (a larger monthly allowance) now, granting the difference for the rest of the cycle. Other changes always take effect at the next cycle.',
    }),
  }),
});

builder.queryField('organization', (t) =>
  t.field({
    type: OrganizationType,
    nullable: true,
    description: 'The organization with this id; null when there is none.',
    authScopes: allow({ roles: ['member', 'service', 'admin'], scopes: ['read'] }),
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, args, ctx) =>
      asQueryInput(async () => (await findOrganization(ctx.db, authorizeOrganization(ctx, args.id))) ?? null),
  }),
);

builder.mutationFields((t) => ({
  createOrganization: t.field({
    type: CreateOrganizationSuccess,
    description: "Starts the organization's first billing cycle with its plan's full allowance (admin).",
    authScopes: allow({ roles: ['admin'], scopes: ['billing'] }),
    errors: { types: [InvalidInputError, IdempotencyConflictError] },
    args: { input: t.arg({ type: CreateOrganizationInput, required: true }) },
    resolve: async (_root, { input }, ctx) => {
      const organization = await createOrganization(ctx, {
        name: input.name,
        planId: String(input.planId),
        billingCycleAnchor: input.billingCycleAnchor,
        externalId: input.externalId,
      });
      return { organization };
    },
  }),
  changePlan: t.field({
    type: ChangePlanSuccess,
    description:
      'Changes the plan at the next billing cycle; with `immediately`, an upgrade takes effect now (service or admin).',
    authScopes: allow({ roles: ['service', 'admin'], scopes: ['billing'] }),
    errors: { types: [InvalidInputError, NotFoundError] },
    args: { input: t.arg({ type: ChangePlanInput, required: true }) },
    resolve: async (_root, { input }, ctx) =>
      changePlan(ctx, {
        organizationId: authorizeOrganization(ctx, input.organizationId),
        planId: String(input.planId),
        immediately: input.immediately,
      }),
  }),
}));
