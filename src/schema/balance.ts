import type { GraphQLContext } from '../context.ts';
import { getBalance, type Balance, type CreditAccount } from '../ledger/balance.ts';
import type { CreditLot } from '../ledger/lots.ts';
import { allow, asQueryInput, authorizeOrganization } from './authorization.ts';
import { builder } from './builder.ts';
import { CreditAccountTypeEnum } from './enums.ts';

export const CreditLotType = builder.objectRef<CreditLot>('CreditLot').implement({
  description: 'Credits from one grant, with their own expiry.',
  fields: (t) => ({
    id: t.exposeID('id'),
    type: t.field({ type: CreditAccountTypeEnum, resolve: (lot) => lot.type }),
    granted: t.exposeInt('granted'),
    available: t.exposeInt('available'),
    reserved: t.exposeInt('reserved', { description: 'Held by pending reservations.' }),
    expiresAt: t.field({ type: 'DateTime', nullable: true, resolve: (lot) => lot.expiresAt }),
    createdAt: t.field({ type: 'DateTime', resolve: (lot) => lot.createdAt }),
  }),
});

export const CreditAccountType = builder.objectRef<CreditAccount>('CreditAccount').implement({
  description: 'All lots of one account type.',
  fields: (t) => ({
    type: t.field({ type: CreditAccountTypeEnum, resolve: (account) => account.type }),
    priority: t.exposeInt('priority', { description: 'Consumption order, 1 first.' }),
    available: t.exposeInt('available'),
    reserved: t.exposeInt('reserved', { description: "Held from this type's lots by pending reservations." }),
    lots: t.field({
      type: [CreditLotType],
      description: 'Unexpired lots that still hold credits, in consumption order. The full history is the ledger.',
      resolve: (account) => account.lots,
    }),
  }),
});

export const BalanceType = builder.objectRef<Balance>('Balance').implement({
  fields: (t) => ({
    organizationId: t.exposeID('organizationId'),
    available: t.exposeInt('available', { description: 'Spendable now, all accounts together.' }),
    reserved: t.exposeInt('reserved', { description: 'Held by pending reservations (already pre-deducted).' }),
    accounts: t.field({
      type: [CreditAccountType],
      description: 'Always the four account types, in consumption order.',
      resolve: (balance) => balance.accounts,
    }),
    version: t.exposeInt('version', { description: "Grows with every change of this organization's balance." }),
  }),
});

/** The current balance of an organization the caller was authorized for; null if there is none. */
export function findBalance(ctx: GraphQLContext, organizationId: string): Promise<Balance | null> {
  return getBalance(ctx.db, organizationId, ctx.clock.now());
}

/**
 * The current balance of an organization a row of the database names (a reservation's, a lot's):
 * the foreign key makes a missing one a bug, reported as an internal error.
 */
export async function loadBalance(ctx: GraphQLContext, organizationId: string): Promise<Balance> {
  const balance = await findBalance(ctx, organizationId);
  if (!balance) throw new Error(`organization ${organizationId} has no balance`);
  return balance;
}

builder.queryField('balance', (t) =>
  t.field({
    type: BalanceType,
    nullable: true,
    description: 'The balance of an organization; null when no organization has this id.',
    authScopes: allow({ roles: ['member', 'service', 'admin'], scopes: ['generation', 'read'] }),
    args: { organizationId: t.arg.id({ required: true }) },
    resolve: (_root, args, ctx) =>
      asQueryInput(() => findBalance(ctx, authorizeOrganization(ctx, args.organizationId))),
  }),
);
