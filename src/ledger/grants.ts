import { and, eq } from 'drizzle-orm';
import type { Tx } from '../db/client.ts';
import { creditLots } from '../db/schema.ts';
import { findCreditPack } from './catalog.ts';
import type { LedgerContext } from './context.ts';
import type { AccountType } from './enums.ts';
import { IdempotencyConflictError, InvalidInputError, invariant } from './errors.ts';
import { GRANT_CREDITS_MAX } from './limits.ts';
import { assertBalanceCap, grantLot, type CreditLot } from './lots.ts';
import { bumpBalanceVersion } from './announcements.ts';
import { ensureCurrentCycle, requireLockedOrganization } from './organizations.ts';
import { inOrganizationTransaction } from './organization-queue.ts';
import { echoInput, requireIntInRange, requireKey, requireText, requireUuid, requireValidDate } from './validation.ts';

export interface GrantCreditsInput {
  organizationId: string;
  type: AccountType;
  amount: number;
  expiresAt?: Date | null;
  reason: string;
  idempotencyKey: string;
}

/**
 * An operator's grant. Purchased credits never expire; promotional and referral credits expire
 * when the grant says (or never); a subscription grant is a one-off top-up that ends with the
 * current billing cycle. The same idempotency key returns the original lot.
 */
export async function grantCredits(ctx: LedgerContext, input: GrantCreditsInput): Promise<CreditLot> {
  const organizationId = requireUuid(input.organizationId, 'organizationId');
  const amount = requireIntInRange(input.amount, 1, GRANT_CREDITS_MAX, 'amount');
  const reason = requireText(input.reason, 'reason');
  const idempotencyKey = requireKey(input.idempotencyKey, 'idempotencyKey');
  const expiresAt = input.expiresAt ? requireValidDate(input.expiresAt, 'expiresAt') : null;
  if (expiresAt && (input.type === 'PURCHASED' || input.type === 'SUBSCRIPTION')) {
    const rule = input.type === 'PURCHASED' ? 'never expire' : 'expire at the end of the billing cycle';
    throw new InvalidInputError(`${input.type} credits ${rule}; leave expiresAt out.`, 'expiresAt');
  }
  return inOrganizationTransaction(ctx.db, organizationId, async (tx) => {
    const locked = await requireLockedOrganization(tx, organizationId);
    const now = ctx.clock.now();
    const { org } = await ensureCurrentCycle(tx, locked, now);
    const existing = await findLotBySource(tx, organizationId, 'GRANT', idempotencyKey);
    if (existing) {
      const same =
        existing.type === input.type &&
        existing.granted === amount &&
        existing.reason === reason &&
        (input.type === 'SUBSCRIPTION' || (existing.expiresAt?.getTime() ?? null) === (expiresAt?.getTime() ?? null));
      if (!same) throw new IdempotencyConflictError('This idempotency key was already used for a different grant.');
      return existing;
    }
    // Checked only for a new grant: a retry of one whose expiry has passed meanwhile is still the
    // same input and gets the original lot back.
    if (expiresAt && expiresAt.getTime() <= now.getTime()) {
      throw new InvalidInputError('expiresAt must be in the future.', 'expiresAt');
    }
    await assertBalanceCap(tx, organizationId, amount, now);
    const lot = await grantLot(tx, {
      organizationId,
      type: input.type,
      amount,
      expiresAt: input.type === 'SUBSCRIPTION' ? org.cycleEndsAt : expiresAt,
      source: 'GRANT',
      sourceKey: idempotencyKey,
      reason,
      now,
    });
    invariant(lot, 'a grant key seen free under the lock was taken');
    await bumpBalanceVersion(tx, organizationId);
    return lot;
  });
}

export interface PurchaseCreditPackInput {
  organizationId: string;
  packId: string;
  paymentReference: string;
}

/**
 * Grants a bought pack's credits once per payment reference, whichever way the retries come. A
 * payment reference is the organization's own: its idempotency scope is the organization the
 * purchase pays for, so another organization's use of the same string is a different purchase
 * (and no organization learns from the answer whether another used it).
 */
export async function purchaseCreditPack(ctx: LedgerContext, input: PurchaseCreditPackInput): Promise<CreditLot> {
  const organizationId = requireUuid(input.organizationId, 'organizationId');
  const paymentReference = requireKey(input.paymentReference, 'paymentReference');
  const pack = await findCreditPack(ctx.db, input.packId);
  if (!pack) throw new InvalidInputError(`There is no credit pack ${echoInput(input.packId)}.`, 'packId');
  return inOrganizationTransaction(ctx.db, organizationId, async (tx) => {
    const locked = await requireLockedOrganization(tx, organizationId);
    const now = ctx.clock.now();
    await ensureCurrentCycle(tx, locked, now);
    const existing = await findLotBySource(tx, organizationId, 'PURCHASE', paymentReference);
    if (existing) {
      if (existing.packId !== pack.id) {
        throw new IdempotencyConflictError('This payment reference was already used for a different purchase.');
      }
      return existing;
    }
    await assertBalanceCap(tx, organizationId, pack.credits, now, 'packId');
    // The unique key (organization, source, payment reference) makes a second lot impossible;
    // under the organization's lock no other transaction can have taken the reference meanwhile.
    const lot = await grantLot(tx, {
      organizationId,
      type: 'PURCHASED',
      amount: pack.credits,
      expiresAt: null,
      source: 'PURCHASE',
      sourceKey: paymentReference,
      packId: pack.id,
      reason: `${pack.name} pack purchase`,
      now,
    });
    invariant(lot, 'a payment reference seen free under the lock was taken');
    await bumpBalanceVersion(tx, organizationId);
    return lot;
  });
}

async function findLotBySource(tx: Tx, organizationId: string, source: CreditLot['source'], key: string) {
  const [lot] = await tx
    .select()
    .from(creditLots)
    .where(
      and(eq(creditLots.organizationId, organizationId), eq(creditLots.source, source), eq(creditLots.sourceKey, key)),
    );
  return lot;
}
