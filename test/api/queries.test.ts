import { sql } from 'drizzle-orm';
import { describe, expect } from 'vitest';
import { it, useTestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { LEDGER, QUOTE, RESERVATION } from '../support/operations.ts';
import { grant, newOrganization, reserve, textCredits } from '../support/scenario.ts';

describe.each(drivers)('queries (%s)', (driver) => {
  useTestApp(driver, { auditAfterEach: false });

  it('lists the catalogs to any valid token, models filtered by output type', async ({ t }) => {
    const org = await newOrganization(t);
    const all = await t.gql(
      '{ models { id tier outputType resolutions maxDurationSeconds } plans { id monthlyCredits } creditPacks { id credits priceCents } }',
      {},
      org.member,
    );
    expect(all.errors).toBeUndefined();
    expect(all.data.models).toHaveLength(9);
    expect(all.data.plans.map((p: any) => p.id)).toEqual(['free', 'starter', 'pro', 'studio']);
    expect(all.data.creditPacks[0]).toEqual({ id: 'pack-500', credits: 500, priceCents: 500 });
    const videos = await t.gql('{ models(outputType: VIDEO) { id outputType maxDurationSeconds } }', {}, org.member);
    expect(videos.errors).toBeUndefined();
    // The catalog has exactly three video models; an empty list must not pass as "all are videos".
    expect(videos.data.models.map((m: any) => m.id).sort()).toEqual(['video-draft', 'video-premium', 'video-standard']);
    expect(videos.data.models.every((m: any) => m.outputType === 'VIDEO' && m.maxDurationSeconds > 0)).toBe(true);
    const anonymous = await t.gql('{ plans { id } }');
    expect(anonymous.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
  });

  it('quotes a generation against the available balance with the same price a reservation holds', async ({ t }) => {
    const org = await newOrganization(t); // 100
    const generation = { modelId: 'video-standard', resolution: 'HD_720P', durationSeconds: 4 };
    const quote = await t.gql(QUOTE, { id: org.id, generation }, org.member);
    expect(quote.data.creditQuote).toEqual({ cost: 20, available: 100, affordable: true, affordableCount: 5 });
    const reserved = await reserve(t, org, generation);
    expect(reserved.reservation.amount).toBe(20);
    const big = await t.gql(QUOTE, { id: org.id, generation: { ...generation, count: 5 } }, org.member);
    expect(big.data.creditQuote).toEqual({ cost: 100, available: 80, affordable: false, affordableCount: 0 });
  });

  it.for<[string, Record<string, unknown>]>([
    ['generation.modelId', { modelId: 'no-such-model' }],
    ['generation.resolution', { modelId: 'image-premium', resolution: 'SD_480P' }],
    ['generation.durationSeconds', { modelId: 'video-draft', resolution: 'SD_480P', durationSeconds: 11 }],
    ['generation.count', { modelId: 'text-draft', count: 0 }],
  ])('answers a bad quote with BAD_USER_INPUT naming %s', async ([field, generation], { t }) => {
    const org = await newOrganization(t);
    const result = await t.gql(QUOTE, { id: org.id, generation }, org.member);
    expect(result.data).toBeNull();
    expect(result.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field });
  });

  it('pages through the ledger newest first', async ({ t }) => {
    const org = await newOrganization(t);
    await grant(t, org, 'PURCHASED', 10);
    await reserve(t, org, textCredits(3));
    await reserve(t, org, textCredits(4));
    const first = await t.gql(LEDGER, { id: org.id, first: 2 }, org.member);
    const page1 = first.data.ledger;
    expect(page1.edges.map((e: any) => [e.node.kind, e.node.amount, e.node.reservedChange])).toEqual([
      ['RESERVE', -4, 4],
      ['RESERVE', -3, 3],
    ]);
    expect(page1.pageInfo).toMatchObject({ hasNextPage: true, hasPreviousPage: false });
    const second = await t.gql(LEDGER, { id: org.id, first: 2, after: page1.pageInfo.endCursor }, org.member);
    expect(second.data.ledger.edges.map((e: any) => [e.node.kind, e.node.amount])).toEqual([
      ['GRANT', 10],
      ['GRANT', 100],
    ]);
    expect(second.data.ledger.pageInfo).toMatchObject({ hasNextPage: false, hasPreviousPage: true });
    const bad = await t.gql(LEDGER, { id: org.id, after: 'bm9wZQ' }, org.member);
    expect(bad.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'after' });
    const tooMany = await t.gql(LEDGER, { id: org.id, first: 101 }, org.member);
    expect(tooMany.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'first' });
  });

  it('answers malformed ids with BAD_USER_INPUT and other organizations with FORBIDDEN', async ({ t }) => {
    const a = await newOrganization(t);
    const b = await newOrganization(t);
    const malformed = await t.gql(RESERVATION, { id: 'nope' }, a.member);
    expect(malformed.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'id' });
    const foreign = await t.gql(QUOTE, { id: b.id, generation: textCredits(1) }, a.member);
    expect(foreign.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect(JSON.stringify(foreign)).not.toContain('available');
  });

  it('keeps the journal append-only at the database level', async ({ t }) => {
    const org = await newOrganization(t);
    await expect(
      t.database.db.execute(
        sql`update ledger_entries set available_change = 1000000 where organization_id = ${org.id}`,
      ),
    ).rejects.toThrow();
    await expect(
      t.database.db.execute(sql`delete from ledger_entries where organization_id = ${org.id}`),
    ).rejects.toThrow();
    expect(await t.audit()).toEqual([]);
  });
});
