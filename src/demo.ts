import { asc } from 'drizzle-orm';
import { organizations } from './db/schema.ts';
import type { LedgerContext } from './ledger/context.ts';
import { purchaseCreditPack } from './ledger/grants.ts';
import { createOrganization, type Organization } from './ledger/organizations.ts';

export const DEMO_ORGANIZATION_NAME = 'Demo organization';

/**
 * For a first look on a fresh machine: an empty database gets one organization on the Pro plan
 * (subscription credits) with one purchased pack. Returns the oldest organization either way.
 */
export async function seedDemo(ctx: LedgerContext): Promise<{ organization: Organization; created: boolean }> {
  const [existing] = await ctx.db.select().from(organizations).orderBy(asc(organizations.createdAt)).limit(1);
  if (existing) return { organization: existing, created: false };
  const organization = await createOrganization(ctx, { name: DEMO_ORGANIZATION_NAME, planId: 'pro' });
  await purchaseCreditPack(ctx, {
    organizationId: organization.id,
    packId: 'pack-2000',
    paymentReference: `demo-${organization.id}`,
  });
  return { organization, created: true };
}
