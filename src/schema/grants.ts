import { IdempotencyConflictError, InvalidInputError, NotFoundError } from '../ledger/errors.ts';
import { grantCredits, purchaseCreditPack } from '../ledger/grants.ts';
import type { CreditLot } from '../ledger/lots.ts';
import { allow, authorizeOrganization } from './authorization.ts';
import { BalanceType, CreditLotType, loadBalance } from './balance.ts';
import { builder } from './builder.ts';
import { CreditAccountTypeEnum } from './enums.ts';

interface LotPayload {
  lot: CreditLot;
}

function lotSuccessType(name: string) {
  return builder.objectRef<LotPayload>(name).implement({
    fields: (t) => ({
      lot: t.field({ type: CreditLotType, resolve: (payload) => payload.lot }),
      balance: t.field({
        type: BalanceType,
        resolve: (payload, _args, ctx) => loadBalance(ctx, payload.lot.organizationId),
      }),
    }),
  });
}

const GrantCreditsSuccess = lotSuccessType('GrantCreditsSuccess');
const PurchaseCreditPackSuccess = lotSuccessType('PurchaseCreditPackSuccess');

const GrantCreditsInput = builder.inputType('GrantCreditsInput', {
  fields: (t) => ({
    organizationId: t.id({ required: true }),
    type: t.field({ type: CreditAccountTypeEnum, required: true }),
    amount: t.int({ required: true, description: 'Whole credits, 1 to 1,000,000,000.' }),
    expiresAt: t.field({
      type: 'DateTime',
      required: false,
      description: 'For PROMOTIONAL and REFERRAL grants; PURCHASED never expire, SUBSCRIPTION ends with the cycle.',
    }),
    reason: t.string({ required: true }),
    idempotencyKey: t.string({ required: true }),
  }),
});

const PurchaseCreditPackInput = builder.inputType('PurchaseCreditPackInput', {
  fields: (t) => ({
    organizationId: t.id({ required: true }),
    packId: t.id({ required: true }),
    paymentReference: t.string({
      required: true,
      description:
        'The payment provider reference; it grants once per organization (another organization may use the same string for its own purchase).',
    }),
  }),
});

builder.mutationFields((t) => ({
  grantCredits: t.field({
    type: GrantCreditsSuccess,
    description:
      'Grants credits as a new lot (admin; or a service token whose scope claim names billing, to its own organization).',
    // A service token without a scope claim keeps its old rights, which never included grants.
    authScopes: allow({ roles: ['admin'], scopedRoles: ['service'], scopes: ['billing'] }),
    errors: { types: [InvalidInputError, NotFoundError, IdempotencyConflictError] },
    args: { input: t.arg({ type: GrantCreditsInput, required: true }) },
    resolve: async (_root, { input }, ctx) => {
      const lot = await grantCredits(ctx, {
        ...input,
        organizationId: authorizeOrganization(ctx, input.organizationId),
      });
      return { lot };
    },
  }),
  purchaseCreditPack: t.field({
    type: PurchaseCreditPackSuccess,
    description: 'Grants a bought credit pack, once per payment reference of the organization (service or admin).',
    authScopes: allow({ roles: ['service', 'admin'], scopes: ['billing'] }),
    errors: { types: [InvalidInputError, NotFoundError, IdempotencyConflictError] },
    args: { input: t.arg({ type: PurchaseCreditPackInput, required: true }) },
    resolve: async (_root, { input }, ctx) => {
      const lot = await purchaseCreditPack(ctx, {
        organizationId: authorizeOrganization(ctx, input.organizationId),
        packId: String(input.packId),
        paymentReference: input.paymentReference,
      });
      return { lot };
    },
  }),
}));
