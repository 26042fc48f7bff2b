import { randomUUID } from 'node:crypto';
import { and, asc, eq, isNull, sql } from 'drizzle-orm';
import type { Queryable } from '../db/client.ts';
import { rowsOf } from '../db/client.ts';
import { balanceAlertEvents, balanceAlerts, reservations } from '../db/schema.ts';
import { ALERTS_PER_ORGANIZATION_MAX } from './alert-evaluation.ts';
import { availableCredits } from './balance.ts';
import { findModel, listModels, type GenerationModel } from './catalog.ts';
import type { LedgerContext } from './context.ts';
import { IdempotencyConflictError, InvalidInputError, NotFoundError, invariant } from './errors.ts';
import { inOrganizationTransaction } from './organization-queue.ts';
import { requireLockedOrganization } from './organizations.ts';
import { RESOLUTIONS, priceGeneration } from './pricing.ts';
import { isUuid, requireIntInRange, requireKey, requireUuid } from './validation.ts';

export type BalanceAlert = typeof balanceAlerts.$inferSelect;
export type BalanceAlertEvent = typeof balanceAlertEvents.$inferSelect;

export const ALERT_THRESHOLD_MIN = 1;
export const ALERT_THRESHOLD_MAX = 2_000_000_000;
/** How far back "the organization's most used model" looks. */
const USAGE_WINDOW_DAYS = 30;

export interface SetBalanceAlertInput {
  organizationId: string;
  threshold: number;
  idempotencyKey: string;
}

/**
 * Watches a threshold. A new alert is armed if and only if available credits stand at or above
 * the threshold when it is created (decided under the organization's lock), so an alert set below
 * the current balance waits for the balance to rise past it before it can fire. The same key with
 * the same threshold answers the alert it created, even after its removal.
 */
export async function setBalanceAlert(ctx: LedgerContext, input: SetBalanceAlertInput): Promise<BalanceAlert> {
  const organizationId = requireUuid(input.organizationId, 'organizationId');
  const idempotencyKey = requireKey(input.idempotencyKey, 'idempotencyKey');
  const threshold = requireIntInRange(input.threshold, ALERT_THRESHOLD_MIN, ALERT_THRESHOLD_MAX, 'threshold');
  return inOrganizationTransaction(ctx.db, organizationId, async (tx) => {
    await requireLockedOrganization(tx, organizationId);
    const [existing] = await tx
      .select()
      .from(balanceAlerts)
      .where(and(eq(balanceAlerts.organizationId, organizationId), eq(balanceAlerts.idempotencyKey, idempotencyKey)));
    if (existing) {
      if (existing.threshold !== threshold) {
        throw new IdempotencyConflictError(
          'This idempotency key was already used for an alert with another threshold.',
        );
      }
      return existing;
    }
    const watched = await listBalanceAlerts(tx, organizationId);
    if (watched.length >= ALERTS_PER_ORGANIZATION_MAX) {
      throw new InvalidInputError(
        `An organization may watch at most ${ALERTS_PER_ORGANIZATION_MAX} balance alerts; remove one first.`,
        'organizationId',
      );
    }
    const now = ctx.clock.now();
    const available = await availableCredits(tx, organizationId, now);
    const [alert] = await tx
      .insert(balanceAlerts)
      .values({
        organizationId,
        id: randomUUID(),
        threshold,
        armed: available >= threshold,
        idempotencyKey,
        createdAt: now,
      })
      .returning();
    invariant(alert, 'an alert key seen free under the lock was taken');
    return alert;
  });
}

/**
 * Stops watching an alert; its events stay. An alert of another organization than the caller's
 * (`scope`, null for an operator) is answered exactly like one that does not exist.
 */
export async function removeBalanceAlert(
  ctx: LedgerContext,
  alertId: string,
  scope: string | null,
): Promise<BalanceAlert> {
  if (!isUuid(alertId)) throw new NotFoundError('No such balance alert.');
  const id = alertId.toLowerCase();
  const found = await findBalanceAlert(ctx.db, id, scope);
  if (!found) throw new NotFoundError('No such balance alert.');
  return inOrganizationTransaction(ctx.db, found.organizationId, async (tx) => {
    await requireLockedOrganization(tx, found.organizationId);
    const [removed] = await tx
      .update(balanceAlerts)
      .set({ removedAt: ctx.clock.now() })
      .where(
        and(
          eq(balanceAlerts.organizationId, found.organizationId),
          eq(balanceAlerts.id, id),
          isNull(balanceAlerts.removedAt),
        ),
      )
      .returning();
    if (!removed) throw new NotFoundError('No such balance alert.');
    return removed;
  });
}

async function findBalanceAlert(db: Queryable, id: string, scope: string | null): Promise<BalanceAlert | undefined> {
  const [alert] = await db
    .select()
    .from(balanceAlerts)
    .where(
      and(
        eq(balanceAlerts.id, id),
        isNull(balanceAlerts.removedAt),
        scope === null ? undefined : eq(balanceAlerts.organizationId, scope),
      ),
    );
  return alert;
}

/** The alerts an organization watches, lowest threshold first. */
export function listBalanceAlerts(db: Queryable, organizationId: string): Promise<BalanceAlert[]> {
  return db
    .select()
    .from(balanceAlerts)
    .where(and(eq(balanceAlerts.organizationId, organizationId), isNull(balanceAlerts.removedAt)))
    .orderBy(asc(balanceAlerts.threshold), asc(balanceAlerts.createdAt));
}

/** An alert event as subscribers receive it: what fired, and what the balance still buys. */
export interface DeliveredAlertEvent extends BalanceAlertEvent {
  /** Generations of `modelId` the available credits still pay for; null without a model. */
  generationsLeft: number | null;
  modelId: string | null;
}

/** Reads one committed event and prices what is left of the balance, at delivery. */
export async function findDeliveredAlertEvent(
  db: Queryable,
  organizationId: string,
  eventId: string,
  now: Date,
): Promise<DeliveredAlertEvent | null> {
  if (!isUuid(eventId) || !isUuid(organizationId)) return null;
  const [event] = await db
    .select()
    .from(balanceAlertEvents)
    .where(and(eq(balanceAlertEvents.organizationId, organizationId), eq(balanceAlertEvents.id, eventId)));
  if (!event) return null;
  const model = await referenceModel(db, organizationId, now);
  if (!model) return { ...event, generationsLeft: null, modelId: null };
  return { ...event, generationsLeft: Math.floor(event.available / oneGenerationCost(model)), modelId: model.id };
}

/**
 * The model an alert speaks in: the organization's most used over the last 30 days by captured
 * credits (ties to the lower model id), else the cheapest image model (ties to catalog order).
 */
export async function referenceModel(
  db: Queryable,
  organizationId: string,
  now: Date,
): Promise<GenerationModel | null> {
  const since = new Date(now.getTime() - USAGE_WINDOW_DAYS * 86_400_000).toISOString();
  const [used] = rowsOf<{ model_id: string }>(
    await db.execute(sql`
      select model_id from ${reservations}
      where organization_id = ${organizationId} and captured_amount > 0 and settled_at >= ${since}::timestamptz
      group by model_id order by sum(captured_amount) desc, model_id asc limit 1`),
  );
  const model = used ? await findModel(db, used.model_id) : undefined;
  if (model) return model;
  const images = await listModels(db, 'IMAGE');
  let cheapest: GenerationModel | null = null;
  for (const image of images) {
    if (!cheapest || oneGenerationCost(image) < oneGenerationCost(cheapest)) cheapest = image;
  }
  return cheapest;
}

/**
 * The cost of one generation of a model, by the pricing rule: count 1, the lowest resolution the
 * model supports (none for text) and, for video, one second.
 */
export function oneGenerationCost(model: GenerationModel): number {
  const resolution = RESOLUTIONS.find((r) => model.resolutions.includes(r)) ?? null;
  return priceGeneration(model, {
    modelId: model.id,
    count: 1,
    resolution: model.outputType === 'TEXT' ? null : resolution,
    durationSeconds: model.outputType === 'VIDEO' ? 1 : null,
  }).unitCost;
}
