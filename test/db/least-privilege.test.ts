// The production set-up of README "Least privilege": migrations run as the owner, the service as
// a runtime role holding exactly the grants in scripts/runtime-role.sql. The ledger works under
// that role, and the role cannot rewrite or empty the journal even without the triggers' help.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.ts';
import { sql } from 'drizzle-orm';
import { openDatabase, rowsOf, type Database } from '../../src/db/client.ts';
import { auditLedger } from '../../src/ledger/audit.ts';
import { setBalanceAlert } from '../../src/ledger/alerts.ts';
import { grantCredits } from '../../src/ledger/grants.ts';
import { changePlan, createOrganization } from '../../src/ledger/organizations.ts';
import { reserveCredits } from '../../src/ledger/reservations.ts';
import { captureReservation } from '../../src/ledger/settlements.ts';
import { sweepUntilIdle } from '../../src/ledger/sweeper.ts';
import { findDeliveredAlertEvent } from '../../src/ledger/alerts.ts';
import { removeOrganizationWebhook, rotateWebhookSecret, setOrganizationWebhook } from '../../src/ledger/webhooks.ts';
import { createWebhookDispatcher } from '../../src/webhooks/dispatcher.ts';
import { DEVELOPMENT_WEBHOOK_POLICY } from '../../src/webhooks/url-policy.ts';
import { WebhookReceiver } from '../support/webhooks.ts';
import { createPostgresDatabase, hasPostgres } from '../support/database.ts';

const INSUFFICIENT_PRIVILEGE = '42501';

describe.skipIf(!hasPostgres)('least-privilege runtime role (postgres)', () => {
  const role = `credits_app_${randomBytes(4).toString('hex')}`;
  let drop: () => Promise<void>;
  let ownerUrl: string;
  let runtime: Database;
  let asRole: postgres.Sql;

  beforeAll(async () => {
    const created = await createPostgresDatabase();
    drop = created.drop;
    ownerUrl = created.url;
    // The owner migrates (this is what `npm run db:migrate` does).
    const owner = await openDatabase({ databaseUrl: ownerUrl, maxConnections: 2 });
    await owner.close();
    const admin = postgres(ownerUrl, { max: 1, onnotice: () => {} });
    await admin.unsafe(`create role ${role} login`);
    const grants = readFileSync(new URL('../../scripts/runtime-role.sql', import.meta.url), 'utf8').replaceAll(
      ':"app_role"',
      `"${role}"`,
    );
    await admin.unsafe(grants);
    await admin.end();
    const url = new URL(ownerUrl);
    url.username = role;
    runtime = await openDatabase({ databaseUrl: url.toString(), migrate: false });
    asRole = postgres(url.toString(), { max: 1, onnotice: () => {} });
  });

  afterAll(async () => {
    await asRole?.end();
    await runtime?.close();
    await drop?.();
    const admin = postgres(process.env.DATABASE_URL!, { max: 1, onnotice: () => {} });
    await admin.unsafe(`drop role if exists ${role}`);
    await admin.end();
  });

  it('runs every ledger write under the runtime role', async () => {
    const clock = new ManualClock('2026-03-01T00:00:00Z');
    const ctx = { db: runtime.db, clock };
    const org = await createOrganization(ctx, { name: 'Least', planId: 'starter', externalId: `least-${role}` });
    // An alert that the reservations below fire: its state changes and its event is appended.
    await setBalanceAlert(ctx, { organizationId: org.id, threshold: 1005, idempotencyKey: 'low' });
    // A webhook: its events get delivery rows, which a dispatcher under the role claims and records.
    const receiver = await WebhookReceiver.start();
    await setOrganizationWebhook(ctx, org.id, receiver.url);
    await rotateWebhookSecret(ctx, org.id);
    await grantCredits(ctx, {
      organizationId: org.id,
      type: 'PROMOTIONAL',
      amount: 10,
      reason: 'promo',
      idempotencyKey: 'p',
    });
    const reservation = await reserveCredits(ctx, {
      organizationId: org.id,
      idempotencyKey: 'r',
      generation: { modelId: 'text-draft', count: 20 },
    });
    await captureReservation(ctx, { reservationId: reservation.id, amount: 5 }, org.id);
    await changePlan(ctx, { organizationId: org.id, planId: 'pro', immediately: true });
    await reserveCredits(ctx, {
      organizationId: org.id,
      idempotencyKey: 'r2',
      generation: { modelId: 'text-draft', count: 3 },
    });
    clock.set('2026-04-02T00:00:00Z');
    // The refund of the expired reservation also starts the new cycle (every write does).
    expect(await sweepUntilIdle(ctx)).toMatchObject({ refundedReservations: 1, failedItems: 0 });
    const [after] = await runtime.db
      .execute(sql`select cycle_starts_at from organizations where id = ${org.id}`)
      .then((r) => rowsOf<{ cycle_starts_at: string }>(r));
    expect(new Date(after!.cycle_starts_at).toISOString()).toBe('2026-04-01T00:00:00.000Z');
    const events = await runtime.db.execute(sql`select threshold from balance_alert_events`).then((r) => rowsOf(r));
    expect(events.length).toBeGreaterThan(0);
    const dispatcher = createWebhookDispatcher({
      db: runtime.db,
      clock,
      policy: DEVELOPMENT_WEBHOOK_POLICY,
      pollIntervalMs: null,
      load: (organizationId, eventId, at) => findDeliveredAlertEvent(runtime.db, organizationId, eventId, at),
    });
    await dispatcher.deliverDue();
    await dispatcher.stop();
    await receiver.close();
    expect(receiver.received).toHaveLength(events.length);
    const statuses = await runtime.db.execute(sql`select status from webhook_deliveries`).then((r) => rowsOf(r));
    expect(statuses).toEqual(events.map(() => ({ status: 'DELIVERED' })));
    await removeOrganizationWebhook(ctx, org.id);
    expect(await auditLedger(runtime.db)).toEqual([]);
  });

  it('cannot update, delete or truncate the journal or the plan history, nor change the schema', async () => {
    for (const statement of [
      'update ledger_entries set available_change = available_change + 1',
      'delete from ledger_entries',
      'truncate ledger_entries',
      'alter table ledger_entries disable trigger ledger_entries_append_only',
      'drop trigger ledger_entries_no_truncate on ledger_entries',
      "update plan_changes set plan_id = 'studio'",
      'delete from plan_changes',
      'truncate plan_changes',
      'alter table credit_lots disable trigger credit_lots_immutable',
      'alter table credit_lots drop constraint credit_lots_purchased_never_expire',
      'update balance_alert_events set available = 0',
      'delete from balance_alert_events',
      'delete from balance_alerts',
      'delete from webhook_deliveries',
      'delete from organization_webhooks',
    ]) {
      await expect(asRole.unsafe(statement), statement).rejects.toMatchObject({ code: INSUFFICIENT_PRIVILEGE });
    }
  });

  it("may update lots (the ledger moves their credits) but never a lot's type or credits granted", async () => {
    for (const statement of [
      "update credit_lots set type = 'PURCHASED'",
      'update credit_lots set granted = granted + 1',
    ]) {
      await expect(asRole.unsafe(statement), statement).rejects.toThrow(
        /type, source, plan, cycle and granted credits never change/,
      );
    }
  });

  it('refuses to start on a database that lacks migrations when it may not migrate', async () => {
    const empty = await createPostgresDatabase();
    try {
      await expect(openDatabase({ databaseUrl: empty.url, migrate: false })).rejects.toMatchObject({
        name: 'MigrationsPendingError',
      });
    } finally {
      await empty.drop();
    }
  });
});
