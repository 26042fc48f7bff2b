// Journal history for the growth figure, written directly in SQL: organizations that are not the
// bench's, each with its creation in the plan history, one PURCHASED lot and captured reservations
// (a RESERVE and a CAPTURE entry each). Every lot's cached numbers equal its entries, each reservation matches its entries and
// took from the only lot there was, so `npm run audit` stays clean. ledger_entries refuses
// UPDATE, DELETE and TRUNCATE, not INSERT.
import postgres from 'postgres';

/** Reservations per seeded organization at most: many organizations, each with a long history. */
const RESERVATIONS_PER_ORGANIZATION_MAX = 2_500;
const ORGANIZATIONS_PER_TRANSACTION = 20;
const COST = 4;

export interface SeedResult {
  before: number;
  after: number;
  organizations: number;
  ms: number;
}

let batch = 0;

/** Adds history until the journal holds about `target` entries (all of them, the bench's included). */
export async function seedJournalTo(databaseUrl: string, target: number): Promise<SeedResult> {
  const started = Date.now();
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const count = async () =>
      Number((await sql<Array<{ n: string }>>`select count(*)::bigint as n from ledger_entries`)[0]!.n);
    const before = await count();
    const needed = target - before;
    if (needed < 3) return { before, after: before, organizations: 0, ms: Date.now() - started };
    const perOrganizationMax = 1 + 2 * RESERVATIONS_PER_ORGANIZATION_MAX;
    const organizations = Math.ceil(needed / perOrganizationMax);
    const reservations = Math.max(1, Math.floor((needed / organizations - 1) / 2));
    const granted = COST * reservations + 1_000;
    const now = new Date().toISOString();
    for (let done = 0; done < organizations; done += ORGANIZATIONS_PER_TRANSACTION) {
      const count = Math.min(ORGANIZATIONS_PER_TRANSACTION, organizations - done);
      const tag = `bench-seed-${process.pid}-${(batch += 1)}`;
      await sql.begin(async (tx) => {
        await tx`
          with seeded as (
            insert into organizations (id, name, plan_id, billing_cycle_anchor, cycle_starts_at, cycle_ends_at, created_at)
            select gen_random_uuid(), 'bench seed ' || ${tag} || ' ' || g, 'pro', ${now}::timestamptz, ${now}::timestamptz,
              ${now}::timestamptz + interval '1 month', ${now}::timestamptz
            from generate_series(1, ${count}::int) g
            returning id
          ), history as (
            insert into plan_changes (organization_id, change_number, kind, plan_id, next_plan_id, cycle_starts_at, created_at)
            select id, 1, 'CREATED', 'pro', null, ${now}::timestamptz, ${now}::timestamptz from seeded
          )
          insert into credit_lots (id, organization_id, type, granted, available, reserved, expires_at, created_at, source, source_key, reason)
          select gen_random_uuid(), id, 'PURCHASED', ${granted}::int, ${granted - COST * reservations}::int, 0, null, ${now}::timestamptz,
            'GRANT', ${tag}, 'bench seed'
          from seeded`;
        await tx`
          insert into ledger_entries (organization_id, entry_number, lot_id, reservation_id, kind, available_change, reserved_change, reason, created_at, lot_type)
          select organization_id, 1, id, null, 'GRANT', granted, 0, reason, created_at, type
          from credit_lots where source = 'GRANT' and source_key = ${tag}
          order by id`;
        await tx`
          insert into reservations (id, organization_id, idempotency_key, model_id, resolution, duration_seconds, count, amount,
            captured_amount, refunded_amount, status, expires_at, created_at, settled_at)
          select gen_random_uuid(), l.organization_id, 'seed-' || r, 'image-standard', 'HD_720P', null, 1, ${COST}::int,
            ${COST}::int, 0, 'CAPTURED', ${now}::timestamptz + interval '15 minutes', ${now}::timestamptz, ${now}::timestamptz
          from credit_lots l cross join generate_series(1, ${reservations}::int) r
          where l.source = 'GRANT' and l.source_key = ${tag}`;
        await tx`
          insert into ledger_entries (organization_id, entry_number, lot_id, reservation_id, kind, available_change, reserved_change, reason, created_at)
          select r.organization_id, 1 + row_number() over (partition by r.organization_id order by r.id, k.n),
            l.id, r.id, k.kind::ledger_entry_kind, k.available_sign * r.amount, k.reserved_sign * r.amount, null, ${now}::timestamptz
          from credit_lots l
            join reservations r on r.organization_id = l.organization_id
            cross join (values (1, 'RESERVE', -1, 1), (2, 'CAPTURE', 0, -1)) as k(n, kind, available_sign, reserved_sign)
          where l.source = 'GRANT' and l.source_key = ${tag}
          order by r.organization_id, r.id, k.n`;
      });
    }
    // What autovacuum would soon do on a database that grew like this.
    await sql`analyze`;
    return { before, after: await count(), organizations, ms: Date.now() - started };
  } finally {
    await sql.end({ timeout: 5 });
  }
}
