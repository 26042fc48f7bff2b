import { sql } from 'drizzle-orm';
import {
  bigint,
  bigserial,
  boolean,
  check,
  foreignKey,
  index,
  integer,
  jsonb,
  pgEnum,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from 'drizzle-orm/pg-core';

// Enum values are declared in the domain's order; PostgreSQL sorts enum values by declaration,
// so `ORDER BY type` is the consumption priority.
export const accountType = pgEnum('credit_account_type', ['SUBSCRIPTION', 'PURCHASED', 'PROMOTIONAL', 'REFERRAL']);
export const outputType = pgEnum('output_type', ['IMAGE', 'VIDEO', 'TEXT']);
export const modelTier = pgEnum('model_tier', ['DRAFT', 'STANDARD', 'PREMIUM']);
export const reservationStatus = pgEnum('reservation_status', ['PENDING', 'CAPTURED', 'REFUNDED']);
export const entryKind = pgEnum('ledger_entry_kind', ['GRANT', 'RESERVE', 'CAPTURE', 'REFUND', 'EXPIRE']);
// Where a lot came from; together with source_key it makes every grant idempotent. No code writes
// DEMO (the demo seed buys a credit pack like a customer); it stays because dropping a value from a
// PostgreSQL enum means recreating the type and rewriting credit_lots and withheld_credits.
export const lotSource = pgEnum('lot_source', ['CYCLE', 'GRANT', 'PURCHASE', 'PLAN_CHANGE', 'DEMO']);
// What a row of the plan history records: INITIAL is the state an organization was in when the
// history began (migration 0006, taken as given); the others are written by the ledger.
export const planChangeKind = pgEnum('plan_change_kind', [
  'INITIAL',
  'CREATED',
  'SCHEDULED',
  'CANCELLED',
  'UPGRADED',
  'APPLIED',
]);

const timestamptz = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });

export const plans = pgTable('plans', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  monthlyCredits: integer('monthly_credits').notNull(),
  position: integer('position').notNull(),
});

export const creditPacks = pgTable('credit_packs', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  credits: integer('credits').notNull(),
  priceCents: integer('price_cents').notNull(),
});

export const generationModels = pgTable('generation_models', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  tier: modelTier('tier').notNull(),
  outputType: outputType('output_type').notNull(),
  // Credits per image, per second of video, or per text request, at HD_720P.
  unitCredits: integer('unit_credits').notNull(),
  resolutions: text('resolutions').array().notNull(),
  maxDurationSeconds: integer('max_duration_seconds'),
  position: integer('position').notNull(),
});

export const organizations = pgTable(
  'organizations',
  {
    id: uuid('id').primaryKey(),
    // The customer's id for this organization in the host application; makes creation idempotent.
    // Shown as given; its uniqueness across organizations lives in organization_external_ids.
    externalId: text('external_id'),
    name: text('name').notNull(),
    planId: text('plan_id')
      .notNull()
      .references(() => plans.id),
    // A plan change scheduled for the start of the next billing cycle.
    nextPlanId: text('next_plan_id').references(() => plans.id),
    billingCycleAnchor: timestamptz('billing_cycle_anchor').notNull(),
    cycleStartsAt: timestamptz('cycle_starts_at').notNull(),
    cycleEndsAt: timestamptz('cycle_ends_at').notNull(),
    // Grows with every committed change to this organization's lots; subscribers order events by it.
    balanceVersion: integer('balance_version').notNull().default(0),
    createdAt: timestamptz('created_at').notNull(),
  },
  (t) => [index('organizations_cycle_ends_at_idx').on(t.cycleEndsAt)],
);

// Claims of external ids, keyed by the external id itself. An external id is unique across all
// organizations, which a table sharded by organization cannot enforce; this one is sharded by the
// external id (on Citus), so the claim is one unique-key insert on one shard. It is written in the
// organization's creation transaction; there is no foreign key, because the two rows live on
// different shards.
export const organizationExternalIds = pgTable('organization_external_ids', {
  externalId: text('external_id').primaryKey(),
  organizationId: uuid('organization_id').notNull(),
});

// Tenant tables: organization_id leads every primary key, unique key and foreign key, so that a
// database sharded by organization (Citus) keeps each organization's rows, and every constraint
// check, on one shard.
export const creditLots = pgTable(
  'credit_lots',
  {
    id: uuid('id').notNull(),
    organizationId: uuid('organization_id')
      .notNull()
      .references(() => organizations.id),
    type: accountType('type').notNull(),
    granted: integer('granted').notNull(),
    // Cached from the journal: available = sum(available_change), reserved = sum(reserved_change).
    available: integer('available').notNull(),
    reserved: integer('reserved').notNull().default(0),
    expiresAt: timestamptz('expires_at'),
    createdAt: timestamptz('created_at').notNull(),
    source: lotSource('source').notNull(),
    sourceKey: text('source_key').notNull(),
    packId: text('pack_id').references(() => creditPacks.id),
    // Set on plan allowance lots (sources CYCLE and PLAN_CHANGE): the plan whose allowance this is
    // and the billing cycle it belongs to, so the audit can bound each cycle's allowance grants.
    planId: text('plan_id').references(() => plans.id),
    cycleStartsAt: timestamptz('cycle_starts_at'),
    reason: text('reason').notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.organizationId, t.id] }),
    check('credit_lots_granted_positive', sql`${t.granted} > 0`),
    check('credit_lots_available_nonnegative', sql`${t.available} >= 0`),
    check('credit_lots_reserved_nonnegative', sql`${t.reserved} >= 0`),
    check('credit_lots_within_granted', sql`${t.available} + ${t.reserved} <= ${t.granted}`),
    // Every grant's idempotency key, a purchase's payment reference among them, is unique within
    // its organization only: organizations share no namespace of keys.
    uniqueIndex('credit_lots_source_key_idx').on(t.organizationId, t.source, t.sourceKey),
    index('credit_lots_organization_idx').on(t.organizationId, t.type),
    index('credit_lots_expiring_idx').on(t.expiresAt).where(sql`${t.available} > 0 and ${t.expiresAt} is not null`),
    // Purchased credits never expire, and no lot of them is ever closed early.
    check('credit_lots_purchased_never_expire', sql`${t.type} <> 'PURCHASED' or ${t.expiresAt} is null`),
  ],
);

// The plan history, append-only (a trigger refuses updates, deletes and TRUNCATE): every change of
// an organization's plan, written in the transaction that makes it. Each row is the state after
// the change: the plan in force and the plan scheduled for the next cycle. The audit judges
// allowance grants and the organization's plan columns against it, not against the rows it checks.
export const planChanges = pgTable(
  'plan_changes',
  {
    organizationId: uuid('organization_id')
      .notNull()
      .references(() => organizations.id),
    // 1, 2, 3, … per organization, assigned under the organization's lock.
    changeNumber: integer('change_number').notNull(),
    kind: planChangeKind('kind').notNull(),
    planId: text('plan_id')
      .notNull()
      .references(() => plans.id),
    nextPlanId: text('next_plan_id').references(() => plans.id),
    // The billing cycle the change belongs to: the one it was made in, or for APPLIED the one it
    // starts (a scheduled plan takes effect at the start of a cycle).
    cycleStartsAt: timestamptz('cycle_starts_at').notNull(),
    createdAt: timestamptz('created_at').notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.organizationId, t.changeNumber] }),
    check('plan_changes_number_positive', sql`${t.changeNumber} > 0`),
  ],
);

// Allowance credits an organization was entitled to but could not hold under the balance cap. An
// allowance is granted as far as it fits; the rest is recorded here, never silently dropped.
export const withheldCredits = pgTable(
  'withheld_credits',
  {
    organizationId: uuid('organization_id')
      .notNull()
      .references(() => organizations.id),
    source: lotSource('source').notNull(),
    sourceKey: text('source_key').notNull(),
    amount: integer('amount').notNull(),
    reason: text('reason').notNull(),
    createdAt: timestamptz('created_at').notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.organizationId, t.source, t.sourceKey] }),
    check('withheld_credits_amount_positive', sql`${t.amount} > 0`),
  ],
);

export const reservations = pgTable(
  'reservations',
  {
    id: uuid('id').notNull(),
    organizationId: uuid('organization_id')
      .notNull()
      .references(() => organizations.id),
    idempotencyKey: text('idempotency_key').notNull(),
    modelId: text('model_id')
      .notNull()
      .references(() => generationModels.id),
    resolution: text('resolution'),
    durationSeconds: integer('duration_seconds'),
    count: integer('count').notNull(),
    amount: integer('amount').notNull(),
    capturedAmount: integer('captured_amount').notNull().default(0),
    refundedAmount: integer('refunded_amount').notNull().default(0),
    status: reservationStatus('status').notNull().default('PENDING'),
    expiresAt: timestamptz('expires_at').notNull(),
    createdAt: timestamptz('created_at').notNull(),
    settledAt: timestamptz('settled_at'),
    refundReason: text('refund_reason'),
  },
  (t) => [
    primaryKey({ columns: [t.organizationId, t.id] }),
    check('reservations_amount_positive', sql`${t.amount} > 0`),
    check(
      'reservations_settled_sum',
      sql`${t.capturedAmount} + ${t.refundedAmount} = case when ${t.status} = 'PENDING' then 0 else ${t.amount} end`,
    ),
    uniqueIndex('reservations_idempotency_idx').on(t.organizationId, t.idempotencyKey),
    index('reservations_pending_expiry_idx').on(t.expiresAt).where(sql`${t.status} = 'PENDING'`),
  ],
);

// Idempotency keys of the writes on an existing reservation (capture, refund, extension): a retry
// with the same key and input gets the answer the first request got, stored as it was given, so a
// client that lost an answer can ask again without meeting "already captured". Written in the
// transaction of the write it records; a refused write records nothing, so its key stays free.
export const reservationOperationKeys = pgTable(
  'reservation_operation_keys',
  {
    organizationId: uuid('organization_id')
      .notNull()
      .references(() => organizations.id),
    idempotencyKey: text('idempotency_key').notNull(),
    reservationId: uuid('reservation_id').notNull(),
    // CAPTURE, REFUND or EXTEND, and the input as given (compared on a retry).
    operation: text('operation').notNull(),
    request: text('request').notNull(),
    // The reservation as the first request answered it.
    answer: jsonb('answer').notNull(),
    createdAt: timestamptz('created_at').notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.organizationId, t.idempotencyKey] }),
    check('reservation_operation_keys_operation', sql`${t.operation} in ('CAPTURE', 'REFUND', 'EXTEND', 'INCREASE')`),
    foreignKey({
      name: 'reservation_operation_keys_reservation_fk',
      columns: [t.organizationId, t.reservationId],
      foreignColumns: [reservations.organizationId, reservations.id],
    }),
  ],
);

// The append-only journal. Each entry moves credits within one lot: available_change is the
// signed change to the lot's spendable credits, reserved_change to the credits held for a
// reservation. GRANT (+n, 0), RESERVE (-n, +n), CAPTURE (0, -n), REFUND (+n, -n), EXPIRE (-n, 0).
export const ledgerEntries = pgTable(
  'ledger_entries',
  {
    // Internal only and no key: a global sequence says how many entries all organizations wrote,
    // so it is never shown to a caller, and on a sharded database its values are not in the order
    // the entries were written. Nothing orders by it; entry_number is the journal's order.
    id: bigserial('id', { mode: 'number' }).notNull(),
    organizationId: uuid('organization_id')
      .notNull()
      .references(() => organizations.id),
    // The entry's place in its organization's journal: 1, 2, 3, … without gaps, assigned under the
    // organization's lock. It orders and pages the journal and is what callers see of an entry.
    entryNumber: bigint('entry_number', { mode: 'number' }).notNull(),
    lotId: uuid('lot_id').notNull(),
    reservationId: uuid('reservation_id'),
    kind: entryKind('kind').notNull(),
    availableChange: integer('available_change').notNull(),
    reservedChange: integer('reserved_change').notNull(),
    reason: text('reason'),
    createdAt: timestamptz('created_at').notNull(),
    // On a GRANT entry, the account type the lot was granted as: the journal's own record of it,
    // which the audit holds the lot to. Null on every other kind (grants written before migration
    // 0006 were given their lot's type as it stood then, taken as given).
    lotType: accountType('lot_type'),
  },
  (t) => [
    check('ledger_entries_nonzero', sql`${t.availableChange} <> 0 or ${t.reservedChange} <> 0`),
    // Entries from before migration 0006 were given their lot's type as it stood then.
    check('ledger_entries_grant_names_type', sql`(${t.kind} = 'GRANT') = (${t.lotType} is not null)`),
    primaryKey({ columns: [t.organizationId, t.entryNumber] }),
    foreignKey({
      name: 'ledger_entries_lot_fk',
      columns: [t.organizationId, t.lotId],
      foreignColumns: [creditLots.organizationId, creditLots.id],
    }),
    // Checked only when reservation_id is set (MATCH SIMPLE): grants and expiries belong to no reservation.
    foreignKey({
      name: 'ledger_entries_reservation_fk',
      columns: [t.organizationId, t.reservationId],
      foreignColumns: [reservations.organizationId, reservations.id],
    }),
    index('ledger_entries_lot_idx').on(t.organizationId, t.lotId),
    index('ledger_entries_reservation_idx')
      .on(t.organizationId, t.reservationId)
      .where(sql`${t.reservationId} is not null`),
  ],
);

// Low-balance alerts: an organization's thresholds on its available credits (all account types
// together). `armed` says whether available stood at or above the threshold when last evaluated;
// the posting that takes it below fires the alert (disarms it and appends an event), the one that
// brings it back re-arms it. Evaluated in every posting's statement, under the organization's lock.
// A removed alert keeps its row (events refer to it) and is never evaluated again.
export const balanceAlerts = pgTable(
  'balance_alerts',
  {
    organizationId: uuid('organization_id')
      .notNull()
      .references(() => organizations.id),
    id: uuid('id').notNull(),
    threshold: integer('threshold').notNull(),
    armed: boolean('armed').notNull(),
    idempotencyKey: text('idempotency_key').notNull(),
    createdAt: timestamptz('created_at').notNull(),
    lastFiredAt: timestamptz('last_fired_at'),
    removedAt: timestamptz('removed_at'),
  },
  (t) => [
    primaryKey({ columns: [t.organizationId, t.id] }),
    uniqueIndex('balance_alerts_idempotency_idx').on(t.organizationId, t.idempotencyKey),
    check('balance_alerts_threshold_range', sql`${t.threshold} between 1 and 2000000000`),
  ],
);

// The outbox of fired alerts, append-only: one row per crossing, written in the statement of the
// posting that crossed, so an event exists if and only if its change committed. Its id is stable,
// what live subscribers receive and what a receiver deduplicates by.
export const balanceAlertEvents = pgTable(
  'balance_alert_events',
  {
    organizationId: uuid('organization_id')
      .notNull()
      .references(() => organizations.id),
    id: uuid('id').notNull(),
    alertId: uuid('alert_id').notNull(),
    threshold: integer('threshold').notNull(),
    // Available credits right after the change that crossed the threshold.
    available: bigint('available', { mode: 'number' }).notNull(),
    // The balance version the change announced, when it announced one.
    balanceVersion: integer('balance_version'),
    occurredAt: timestamptz('occurred_at').notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.organizationId, t.id] }),
    check('balance_alert_events_below_threshold', sql`${t.available} < ${t.threshold}`),
    foreignKey({
      name: 'balance_alert_events_alert_fk',
      columns: [t.organizationId, t.alertId],
      foreignColumns: [balanceAlerts.organizationId, balanceAlerts.id],
    }),
    index('balance_alert_events_time_idx').on(t.organizationId, t.occurredAt),
  ],
);

// Where an organization's alert events are sent: at most one live webhook per organization. The
// signing secret is kept to sign with (HMAC needs it); the one it replaced stays valid for a day
// after a rotation, so receivers can switch without losing a delivery.
export const organizationWebhooks = pgTable(
  'organization_webhooks',
  {
    organizationId: uuid('organization_id')
      .notNull()
      .references(() => organizations.id),
    id: uuid('id').notNull(),
    url: text('url').notNull(),
    secret: text('secret').notNull(),
    previousSecret: text('previous_secret'),
    previousSecretExpiresAt: timestamptz('previous_secret_expires_at'),
    createdAt: timestamptz('created_at').notNull(),
    secretRotatedAt: timestamptz('secret_rotated_at'),
    removedAt: timestamptz('removed_at'),
  },
  (t) => [
    primaryKey({ columns: [t.organizationId, t.id] }),
    uniqueIndex('organization_webhooks_live_idx').on(t.organizationId).where(sql`${t.removedAt} is null`),
    check('organization_webhooks_url_length', sql`length(${t.url}) between 1 and 2048`),
  ],
);

export const webhookDeliveryStatus = pgEnum('webhook_delivery_status', ['PENDING', 'DELIVERED', 'FAILED', 'CANCELLED']);

// One row per alert event to send, written in the statement that wrote the event when the
// organization had a webhook then, so a committed event is never without its delivery. A process
// claims a due row by a lease (a token and a deadline, set by a guarded update), so exactly one
// attempt is in flight, and a process that died mid-attempt hands the row on once its lease ends.
export const webhookDeliveries = pgTable(
  'webhook_deliveries',
  {
    organizationId: uuid('organization_id')
      .notNull()
      .references(() => organizations.id),
    eventId: uuid('event_id').notNull(),
    status: webhookDeliveryStatus('status').notNull(),
    attempts: integer('attempts').notNull(),
    // When the next attempt is due; null once the delivery is over.
    nextAttemptAt: timestamptz('next_attempt_at'),
    leaseToken: uuid('lease_token'),
    leaseUntil: timestamptz('lease_until'),
    lastAttemptAt: timestamptz('last_attempt_at'),
    lastHttpStatus: integer('last_http_status'),
    lastError: text('last_error'),
    createdAt: timestamptz('created_at').notNull(),
    deliveredAt: timestamptz('delivered_at'),
  },
  (t) => [
    primaryKey({ columns: [t.organizationId, t.eventId] }),
    foreignKey({
      name: 'webhook_deliveries_event_fk',
      columns: [t.organizationId, t.eventId],
      foreignColumns: [balanceAlertEvents.organizationId, balanceAlertEvents.id],
    }),
    index('webhook_deliveries_due_idx').on(t.organizationId, t.nextAttemptAt).where(sql`${t.status} = 'PENDING'`),
    index('webhook_deliveries_time_idx').on(t.organizationId, t.createdAt),
    check('webhook_deliveries_attempts_range', sql`${t.attempts} >= 0`),
    check(
      'webhook_deliveries_pending_has_next_attempt',
      sql`(${t.status} = 'PENDING') = (${t.nextAttemptAt} is not null)`,
    ),
  ],
);

export const schema = {
  plans,
  creditPacks,
  generationModels,
  organizations,
  organizationExternalIds,
  creditLots,
  reservations,
  ledgerEntries,
  withheldCredits,
  reservationOperationKeys,
  planChanges,
  balanceAlerts,
  balanceAlertEvents,
  organizationWebhooks,
  webhookDeliveries,
};
