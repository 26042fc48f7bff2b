import { randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/app.ts';
import { secretKey, signToken } from '../../src/auth/tokens.ts';
import { ManualClock } from '../../src/clock.ts';
import { rowsOf } from '../../src/db/client.ts';
import { auditLedger } from '../../src/ledger/audit.ts';
import { TEST_SECRET } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { type Cleanups, upgradedFromFilled } from '../support/migrations.ts';
import { CAPTURE, CREATE_ORGANIZATION, LEDGER, RESERVATION } from '../support/operations.ts';

// Migration 0004 (organization_id in every key, external ids claimed in their own table) applied
// to a database that the earlier migrations built and that holds data: every row survives, the
// external ids keep making creation idempotent, the new keys hold, the audit passes, and the
// service settles a reservation made before the upgrade.

const a = randomUUID();
const b = randomUUID();
const lots = { a1: randomUUID(), b1: randomUUID() };
const held = randomUUID();

// Two organizations, one with an external id; A holds a pending reservation of 30 credits taken
// from its lot, written with the schema as it was before 0004 (balance versions as the ledger left them).
const FILL = `
  insert into organizations (id, external_id, name, plan_id, billing_cycle_anchor, cycle_starts_at, cycle_ends_at, balance_version, created_at) values
    ('${a}', 'customer-a', 'A', 'free', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', '2026-02-01T00:00:00Z', 2, '2026-01-01T00:00:00Z'),
    ('${b}', null, 'B', 'free', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', '2026-02-01T00:00:00Z', 1, '2026-01-01T00:00:00Z');
  insert into credit_lots (id, organization_id, type, granted, available, reserved, expires_at, created_at, source, source_key, pack_id, reason) values
    ('${lots.a1}', '${a}', 'PURCHASED', 500, 470, 30, null, '2026-01-02T00:00:00Z', 'PURCHASE', 'pay-a', 'pack-500', 'Starter pack purchase'),
    ('${lots.b1}', '${b}', 'PROMOTIONAL', 50, 50, 0, null, '2026-01-03T00:00:00Z', 'GRANT', 'g-1', null, 'welcome');
  insert into reservations (id, organization_id, idempotency_key, model_id, count, amount, status, expires_at, created_at) values
    ('${held}', '${a}', 'before-upgrade', 'text-draft', 30, 30, 'PENDING', '2026-01-15T13:00:00Z', '2026-01-15T11:00:00Z');
  insert into ledger_entries (organization_id, entry_number, lot_id, reservation_id, kind, available_change, reserved_change, reason, created_at) values
    ('${a}', 1, '${lots.a1}', null, 'GRANT', 500, 0, 'Starter pack purchase', '2026-01-02T00:00:00Z'),
    ('${b}', 1, '${lots.b1}', null, 'GRANT', 50, 0, 'welcome', '2026-01-03T00:00:00Z'),
    ('${a}', 2, '${lots.a1}', '${held}', 'RESERVE', -30, 30, null, '2026-01-15T11:00:00Z');
`;

describe.each(drivers)('migration 0004 on a filled database (%s)', (driver) => {
  const cleanups: Cleanups = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  it('keeps every row and external id, keys everything by organization, and serves on the result', async () => {
    const database = await upgradedFromFilled(driver, { count: 4, fill: FILL }, cleanups);
    const authKey = secretKey(TEST_SECRET);
    const app = createApp({ database, clock: new ManualClock('2026-01-15T12:00:00Z'), authKey, sweepIntervalMs: null });
    cleanups.push(async () => {
      await app.stop();
      await database.close();
    });
    const token = (role: 'member' | 'service' | 'admin', organizationId?: string) =>
      signToken({ subject: `migration-${role}`, role, organizationId, expiresIn: '1h' }, authKey);
    const gql = async (query: string, variables: Record<string, unknown>, bearer: string) => {
      const response = await app.yoga.fetch('http://localhost/graphql', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${bearer}` },
        body: JSON.stringify({ query, variables }),
      });
      return (await response.json()) as { data: any; errors?: unknown[] };
    };
    const rows = async (query: ReturnType<typeof sql>) =>
      rowsOf<Record<string, unknown>>(await database.db.execute(query));

    // Every row is still there, unchanged.
    expect(await rows(sql`select id, external_id, balance_version from organizations order by name`)).toEqual([
      { id: a, external_id: 'customer-a', balance_version: 2 },
      { id: b, external_id: null, balance_version: 1 },
    ]);
    expect(await rows(sql`select id, available, reserved from credit_lots order by created_at`)).toEqual([
      { id: lots.a1, available: 470, reserved: 30 },
      { id: lots.b1, available: 50, reserved: 0 },
    ]);
    expect(
      (await rows(sql`select organization_id, entry_number, kind from ledger_entries order by created_at`)).map(
        (row) => [row.organization_id, Number(row.entry_number), row.kind],
      ),
    ).toEqual([
      [a, 1, 'GRANT'],
      [b, 1, 'GRANT'],
      [a, 2, 'RESERVE'],
    ]);
    // The external id moved to its claim table.
    expect(await rows(sql`select external_id, organization_id from organization_external_ids`)).toEqual([
      { external_id: 'customer-a', organization_id: a },
    ]);
    // Every key of the tenant tables, and every foreign key between them, leads with
    // organization_id (foreign keys to the catalogs point at reference tables and need not).
    const keys = await rows(sql`
      select c.conrelid::regclass::text || ' ' || c.conname as key,
        (select a.attname::text from pg_attribute a where a.attrelid = c.conrelid and a.attnum = c.conkey[1]) as leading
      from pg_constraint c
      where c.conrelid in ('credit_lots'::regclass, 'reservations'::regclass, 'ledger_entries'::regclass)
        and (c.contype in ('p', 'u')
          or (c.contype = 'f' and c.confrelid in ('organizations'::regclass, 'credit_lots'::regclass, 'reservations'::regclass)))
      order by 1`);
    expect(keys.map((key) => key.key)).toEqual([
      'credit_lots credit_lots_organization_id_id_pk',
      'credit_lots credit_lots_organization_id_organizations_id_fk',
      'ledger_entries ledger_entries_lot_fk',
      'ledger_entries ledger_entries_organization_id_entry_number_pk',
      'ledger_entries ledger_entries_organization_id_organizations_id_fk',
      'ledger_entries ledger_entries_reservation_fk',
      'reservations reservations_organization_id_id_pk',
      'reservations reservations_organization_id_organizations_id_fk',
    ]);
    for (const key of keys) expect(key.leading, String(key.key)).toBe('organization_id');
    expect(await auditLedger(database.db)).toEqual([]);
    // The journal is still append-only.
    await expect(database.db.execute(sql`update ledger_entries set reason = 'rewritten'`)).rejects.toThrow();

    // The external id still makes creation idempotent: a retry returns A, other input conflicts.
    const admin = await token('admin');
    const create = async (name: string) =>
      (await gql(CREATE_ORGANIZATION, { input: { name, planId: 'free', externalId: 'customer-a' } }, admin)).data
        .createOrganization;
    expect(await create('A')).toMatchObject({ __typename: 'CreateOrganizationSuccess', organization: { id: a } });
    expect(await create('Someone else')).toMatchObject({ __typename: 'IdempotencyConflictError' });

    // The reservation made before the upgrade is found (also by an admin, without an
    // organization) and captured from the lot it was taken from; numbering continues.
    const found = await gql(RESERVATION, { id: held }, admin);
    expect(found.data.reservation).toMatchObject({ organizationId: a, allocations: [{ lotId: lots.a1, amount: 30 }] });
    const captured = await gql(CAPTURE, { input: { reservationId: held, amount: 20 } }, await token('service', a));
    expect(captured.data.captureReservation).toMatchObject({
      __typename: 'CaptureReservationSuccess',
      reservation: { status: 'CAPTURED', capturedAmount: 20, refundedAmount: 10 },
      balance: { available: 480, reserved: 0 },
    });
    const ledger = await gql(LEDGER, { id: a, first: 10 }, await token('member', a));
    expect(ledger.data.ledger.edges.map((edge: any) => edge.node.kind)).toEqual([
      'REFUND',
      'CAPTURE',
      'RESERVE',
      'GRANT',
    ]);
    expect(await auditLedger(database.db)).toEqual([]);
  });
});
