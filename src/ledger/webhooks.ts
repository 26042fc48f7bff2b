import { randomBytes, randomUUID } from 'node:crypto';
import { and, eq, isNull } from 'drizzle-orm';
import type { Queryable, Tx } from '../db/client.ts';
import { organizationWebhooks, webhookDeliveries } from '../db/schema.ts';
import type { LedgerContext } from './context.ts';
import { NotFoundError, invariant } from './errors.ts';
import { inOrganizationTransaction } from './organization-queue.ts';
import { requireLockedOrganization } from './organizations.ts';
import { requireUuid } from './validation.ts';

export type OrganizationWebhook = typeof organizationWebhooks.$inferSelect;

/** How long a secret replaced by a rotation still signs deliveries, so receivers can switch. */
export const PREVIOUS_SECRET_VALIDITY_MS = 24 * 3600 * 1000;
/** Random bytes of a signing secret (the Standard Webhooks specification asks for 24 to 64). */
const SECRET_BYTES = 32;

/** A webhook as set, with its signing secret: the only time the secret is shown. */
export interface WebhookWithSecret {
  webhook: OrganizationWebhook;
  secret: string;
}

/** A new signing secret in the specification's form, `whsec_` and the base64 of random bytes. */
export function newWebhookSecret(): string {
  return `whsec_${randomBytes(SECRET_BYTES).toString('base64')}`;
}

/**
 * Sends the organization's alert events to `url` (already checked against the deployment's URL
 * policy), with a new signing secret. A webhook the organization had is replaced: its deliveries
 * still pending go to the new URL, signed with the new secret.
 */
export function setOrganizationWebhook(
  ctx: LedgerContext,
  organizationId: string,
  url: string,
): Promise<WebhookWithSecret> {
  const id = requireUuid(organizationId, 'organizationId');
  return inOrganizationTransaction(ctx.db, id, async (tx) => {
    await requireLockedOrganization(tx, id);
    const now = ctx.clock.now();
    await tx
      .update(organizationWebhooks)
      .set({ removedAt: now })
      .where(and(eq(organizationWebhooks.organizationId, id), isNull(organizationWebhooks.removedAt)));
    const secret = newWebhookSecret();
    const [webhook] = await tx
      .insert(organizationWebhooks)
      .values({ organizationId: id, id: randomUUID(), url, secret, createdAt: now })
      .returning();
    invariant(webhook, 'a webhook insert returned nothing');
    return { webhook, secret };
  });
}

/**
 * Stops sending the organization's events. Deliveries still pending end as CANCELLED in the same
 * transaction, so no attempt starts after the answer (one already in flight finishes, and its
 * outcome is not recorded over the cancellation).
 */
export function removeOrganizationWebhook(ctx: LedgerContext, organizationId: string): Promise<OrganizationWebhook> {
  const id = requireUuid(organizationId, 'organizationId');
  return inOrganizationTransaction(ctx.db, id, async (tx) => {
    await requireLockedOrganization(tx, id);
    const now = ctx.clock.now();
    const [removed] = await tx
      .update(organizationWebhooks)
      .set({ removedAt: now })
      .where(and(eq(organizationWebhooks.organizationId, id), isNull(organizationWebhooks.removedAt)))
      .returning();
    if (!removed) throw new NotFoundError('The organization has no webhook.');
    await cancelPendingDeliveries(tx, id, 'the webhook was removed');
    return removed;
  });
}

/**
 * Gives the organization's webhook a new signing secret. The one it replaces keeps signing for
 * 24 hours beside the new one (each delivery carries both signatures), so a receiver may switch
 * to the new secret at any time in that day. A second rotation within the day drops the oldest.
 */
export function rotateWebhookSecret(ctx: LedgerContext, organizationId: string): Promise<WebhookWithSecret> {
  const id = requireUuid(organizationId, 'organizationId');
  return inOrganizationTransaction(ctx.db, id, async (tx) => {
    await requireLockedOrganization(tx, id);
    const current = await findOrganizationWebhook(tx, id);
    if (!current) throw new NotFoundError('The organization has no webhook.');
    const now = ctx.clock.now();
    const secret = newWebhookSecret();
    const [rotated] = await tx
      .update(organizationWebhooks)
      .set({
        secret,
        previousSecret: current.secret,
        previousSecretExpiresAt: new Date(now.getTime() + PREVIOUS_SECRET_VALIDITY_MS),
        secretRotatedAt: now,
      })
      .where(and(eq(organizationWebhooks.organizationId, id), eq(organizationWebhooks.id, current.id)))
      .returning();
    invariant(rotated, 'the live webhook vanished under the lock');
    return { webhook: rotated, secret };
  });
}

/** The organization's live webhook, if it has one. */
export async function findOrganizationWebhook(
  db: Queryable,
  organizationId: string,
): Promise<OrganizationWebhook | undefined> {
  const [webhook] = await db
    .select()
    .from(organizationWebhooks)
    .where(and(eq(organizationWebhooks.organizationId, organizationId), isNull(organizationWebhooks.removedAt)));
  return webhook;
}

/** The secrets a delivery made at `now` is signed with: the current one, and the previous one within its day. */
export function signingSecrets(webhook: OrganizationWebhook, now: Date): string[] {
  const previousValid =
    webhook.previousSecret !== null &&
    webhook.previousSecretExpiresAt !== null &&
    webhook.previousSecretExpiresAt.getTime() > now.getTime();
  return previousValid ? [webhook.secret, webhook.previousSecret!] : [webhook.secret];
}

async function cancelPendingDeliveries(tx: Tx, organizationId: string, reason: string): Promise<void> {
  await tx
    .update(webhookDeliveries)
    .set({ status: 'CANCELLED', nextAttemptAt: null, leaseToken: null, leaseUntil: null, lastError: reason })
    .where(and(eq(webhookDeliveries.organizationId, organizationId), eq(webhookDeliveries.status, 'PENDING')));
}
