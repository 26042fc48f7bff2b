import { systemClock } from '../clock.ts';
import type { Config } from '../config.ts';
import { getBalance, type Balance } from '../ledger/balance.ts';
import { NotFoundError } from '../ledger/errors.ts';
import { createOrganization, findOrganization, listOrganizations, type Organization } from '../ledger/organizations.ts';
import { withDatabase } from './environment.ts';
import { fields, table, type Output } from './output.ts';

export async function createOrganizationCommand(
  config: Config,
  out: Output,
  options: { name: string; plan: string; anchor?: Date; externalId?: string },
): Promise<void> {
  await withDatabase(config, { create: true }, async ({ db }) => {
    const organization = await createOrganization(
      { db, clock: systemClock },
      {
        name: options.name,
        planId: options.plan,
        billingCycleAnchor: options.anchor ?? null,
        externalId: options.externalId ?? null,
      },
    );
    out.print(organizationJson(organization), () => {
      out.line(fields(organizationFields(organization)));
      // Alone on the last line, so that scripts can take it with `tail -n 1`.
      out.line(organization.id);
    });
  });
}

export async function listOrganizationsCommand(config: Config, out: Output, options: { limit: number }): Promise<void> {
  await withDatabase(config, {}, async ({ db }) => {
    const organizations = await listOrganizations(db, options.limit);
    out.print(organizations.map(organizationJson), () => {
      out.line(
        table(
          ['ID', 'NAME', 'PLAN', 'CYCLE STARTS', 'CYCLE ENDS', 'CREATED'],
          organizations.map((org) => [org.id, org.name, org.planId, org.cycleStartsAt, org.cycleEndsAt, org.createdAt]),
        ),
      );
    });
  });
}

export async function showOrganizationCommand(config: Config, out: Output, organizationId: string): Promise<void> {
  await withDatabase(config, {}, async ({ db }) => {
    const organization = await findOrganization(db, organizationId);
    if (!organization) throw new NotFoundError('No such organization.');
    const balance = await getBalance(db, organizationId, systemClock.now());
    out.print({ ...organizationJson(organization), balance: balanceJson(balance!) }, () => {
      out.line(fields(organizationFields(organization)));
      out.line();
      out.line(accountsTable(balance!));
    });
  });
}

function organizationFields(org: Organization): Array<[string, string | number | Date | null]> {
  return [
    ['id', org.id],
    ['name', org.name],
    ['external id', org.externalId],
    ['plan', org.planId],
    ['next plan', org.nextPlanId],
    ['cycle starts', org.cycleStartsAt],
    ['cycle ends', org.cycleEndsAt],
    ['created', org.createdAt],
  ];
}

export function organizationJson(org: Organization) {
  return {
    id: org.id,
    name: org.name,
    externalId: org.externalId,
    planId: org.planId,
    nextPlanId: org.nextPlanId,
    billingCycleAnchor: org.billingCycleAnchor,
    cycleStartsAt: org.cycleStartsAt,
    cycleEndsAt: org.cycleEndsAt,
    createdAt: org.createdAt,
  };
}

/** The balance by account type, in consumption order. */
export function accountsTable(balance: Balance): string {
  return table(
    ['ACCOUNT', 'AVAILABLE', 'RESERVED'],
    [
      ...balance.accounts.map((account) => [account.type, account.available, account.reserved]),
      ['TOTAL', balance.available, balance.reserved],
    ],
  );
}

export function balanceJson(balance: Balance) {
  return {
    organizationId: balance.organizationId,
    available: balance.available,
    reserved: balance.reserved,
    version: balance.version,
    accounts: balance.accounts.map((account) => ({
      type: account.type,
      available: account.available,
      reserved: account.reserved,
      lots: account.lots.map((lot) => ({
        id: lot.id,
        type: lot.type,
        granted: lot.granted,
        available: lot.available,
        reserved: lot.reserved,
        expiresAt: lot.expiresAt,
        source: lot.source,
        reason: lot.reason,
      })),
    })),
  };
}
