import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, listenOverHttp, type TestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { LEDGER, PURCHASE_PACK } from '../support/operations.ts';
import { connectWs, type WsConnection } from '../support/realtime.ts';
import {
  balanceOf,
  grant,
  newOrganization,
  reserve,
  textCredits,
  uniqueKey,
  type TestOrganization,
} from '../support/scenario.ts';
import { expectNoLeak, send, snapshot } from './http.ts';

// Nothing one organization does may be observable by another: not through the answer to a
// payment reference, and not through the ids and cursors of its own ledger. Every request goes
// over a real socket (HTTP, and graphql-ws where a WebSocket client would do the same).

/** Runs one query or mutation over graphql-ws and returns its single result. */
function overWebSocket(connection: WsConnection, query: string, variables: Record<string, unknown>): Promise<any> {
  return new Promise((resolve, reject) => {
    let result: unknown;
    connection.client.subscribe(
      { query, variables },
      { next: (value) => void (result = value), error: reject, complete: () => resolve(result) },
    );
  });
}

interface LedgerView {
  ids: string[];
  cursors: string[];
  endCursor: string | null;
  hasNextPage: boolean;
}

async function ledgerPage(
  t: TestApp,
  org: TestOrganization,
  variables: { first?: number; after?: string } = {},
): Promise<LedgerView> {
  const result = await t.gql(LEDGER, { id: org.id, ...variables }, org.member);
  expect(result.errors, JSON.stringify(result.errors)).toBeUndefined();
  const { edges, pageInfo } = result.data.ledger;
  return {
    ids: edges.map((edge: any) => edge.node.id),
    cursors: edges.map((edge: any) => edge.cursor),
    endCursor: pageInfo.endCursor,
    hasNextPage: pageInfo.hasNextPage,
  };
}

/**
 * An id or cursor with the organization's own id taken out. Two organizations with the same
 * history must see the same thing here: anything else in an id depends on other organizations.
 */
function withoutOwnId(opaque: string, organizationId: string): string {
  return `${opaque.length}:${Buffer.from(opaque, 'base64url').toString('latin1').replaceAll(organizationId, '<own>')}`;
}

describe.each(drivers)('no cross-tenant oracles (%s)', (driver) => {
  let t: TestApp;
  let http: TestApp;
  let baseUrl: string;

  beforeAll(async () => {
    t = await createTestApp(driver);
    const listening = await listenOverHttp(t);
    http = listening.client;
    baseUrl = listening.url.replace(/\/graphql$/, '');
  });
  afterAll(() => t.close());

  describe('payment references are per organization', () => {
    it("another organization's use of a reference is its own purchase; each repeat returns its own original", async () => {
      const a = await newOrganization(http);
      const b = await newOrganization(http);
      const reference = uniqueKey('pi');
      const purchase = (org: TestOrganization, packId = 'pack-500') =>
        http.gql(
          PURCHASE_PACK,
          { input: { organizationId: org.id, packId, paymentReference: reference } },
          org.service,
        );

      const first = (await purchase(a)).data.purchaseCreditPack;
      expect(first.__typename).toBe('PurchaseCreditPackSuccess');
      // B presents the string A used: an ordinary purchase of B's, not a conflict (which would
      // tell B that A used it, and let A squat B's reference).
      const squatted = (await purchase(b)).data.purchaseCreditPack;
      expect(squatted).toMatchObject({
        __typename: 'PurchaseCreditPackSuccess',
        lot: { granted: 500, type: 'PURCHASED' },
      });
      expect(squatted.lot.id).not.toBe(first.lot.id);
      // Each organization's repeat returns its own original lot, and writes nothing.
      const before = await snapshot(t);
      expect((await purchase(a)).data.purchaseCreditPack.lot.id).toBe(first.lot.id);
      expect((await purchase(b)).data.purchaseCreditPack.lot.id).toBe(squatted.lot.id);
      expect(await snapshot(t)).toEqual(before);
      // Within one organization the reference still grants once: another pack under it is a conflict.
      expect((await purchase(a, 'pack-2000')).data.purchaseCreditPack.__typename).toBe('IdempotencyConflictError');
      expect(await snapshot(t)).toEqual(before);
      expect((await purchase(b, 'pack-2000')).data.purchaseCreditPack.__typename).toBe('IdempotencyConflictError');
      for (const org of [a, b]) {
        expect((await balanceOf(http, org)).available).toBe(100 + 500);
      }
      expect(await t.audit()).toEqual([]);
    });

    it('answers alike whether or not another organization used the reference, also when both race, and over a WebSocket', async () => {
      const a = await newOrganization(http);
      const b = await newOrganization(http);
      const used = uniqueKey('pi');
      await http.gql(
        PURCHASE_PACK,
        { input: { organizationId: a.id, packId: 'pack-500', paymentReference: used } },
        a.service,
      );
      const fresh = uniqueKey('pi');
      const connection = connectWs(baseUrl, b.service);
      try {
        const answers = await Promise.all(
          [used, fresh].map((reference) =>
            overWebSocket(connection, PURCHASE_PACK, {
              input: { organizationId: b.id, packId: 'pack-500', paymentReference: reference },
            }),
          ),
        );
        const shapes = answers.map((answer) => ({
          errors: answer.errors,
          typename: answer.data.purchaseCreditPack.__typename,
          granted: answer.data.purchaseCreditPack.lot?.granted,
        }));
        expect(shapes).toEqual([
          { errors: undefined, typename: 'PurchaseCreditPackSuccess', granted: 500 },
          { errors: undefined, typename: 'PurchaseCreditPackSuccess', granted: 500 },
        ]);
      } finally {
        await connection.dispose();
      }
      // Two organizations presenting one new reference at the same moment both get their pack.
      const raced = uniqueKey('pi');
      const results = await Promise.all(
        [a, b].map((org) =>
          http.gql(
            PURCHASE_PACK,
            { input: { organizationId: org.id, packId: 'pack-2000', paymentReference: raced } },
            org.service,
          ),
        ),
      );
      expect(results.map((result) => result.data.purchaseCreditPack.__typename)).toEqual([
        'PurchaseCreditPackSuccess',
        'PurchaseCreditPackSuccess',
      ]);
      expect(await t.audit()).toEqual([]);
    });
  });

  describe('ledger ids and cursors', () => {
    it("reveal nothing of other organizations' writes between two of the organization's own", async () => {
      // Two organizations with the same history; a third writes between every step of the first
      // only. Whatever the first can see of its ids and cursors must equal what the second sees.
      const watched = await newOrganization(http);
      const quiet = await newOrganization(http);
      const busy = await newOrganization(http);
      await grant(http, busy, 'PURCHASED', 10_000);
      const views: Record<'watched' | 'quiet', string[][]> = { watched: [], quiet: [] };
      for (let step = 0; step < 4; step += 1) {
        for (const [name, org] of [
          ['watched', watched],
          ['quiet', quiet],
        ] as const) {
          if (name === 'watched') {
            for (let i = 0; i < 3 + step; i += 1) await reserve(http, busy, textCredits(1));
          }
          if (step === 0) await grant(http, org, 'PURCHASED', 100);
          else await reserve(http, org, textCredits(step));
          const page = await ledgerPage(http, org);
          views[name].push([...page.ids, ...page.cursors].map((opaque) => withoutOwnId(opaque, org.id)));
        }
      }
      expect(views.watched).toEqual(views.quiet);
      // Ids stay unique across organizations (a client may cache entries by id).
      const [watchedIds, quietIds] = [await ledgerPage(http, watched), await ledgerPage(http, quiet)].map(
        (page) => page.ids,
      );
      expect(new Set([...watchedIds!, ...quietIds!]).size).toBe(watchedIds!.length + quietIds!.length);
    });

    it('pages exactly while the organization and others write between page reads', async () => {
      const org = await newOrganization(http);
      const other = await newOrganization(http);
      await grant(http, org, 'PURCHASED', 1_000);
      await grant(http, other, 'PURCHASED', 1_000);
      for (let i = 0; i < 6; i += 1) await reserve(http, org, textCredits(1));
      const whole = await ledgerPage(http, org, { first: 100 });
      expect(whole.ids).toHaveLength(8);

      const seen: string[] = [];
      let after: string | undefined;
      for (;;) {
        const page = await ledgerPage(http, org, { first: 3, after });
        seen.push(...page.ids);
        if (!page.hasNextPage) break;
        after = page.endCursor!;
        // New entries of its own and of another organization arrive between the page reads.
        await reserve(http, org, textCredits(1));
        await reserve(http, other, textCredits(1));
      }
      expect(seen).toEqual(whole.ids);
      // The newest entries are at the head, each new one before all older ones.
      const now = await ledgerPage(http, org, { first: 100 });
      expect(now.ids.slice(-whole.ids.length)).toEqual(whole.ids);
      expect(now.ids.length).toBe(whole.ids.length + 2);
    });

    it("refuses another organization's cursor and tampered cursors with BAD_USER_INPUT, never a 500", async () => {
      const a = await newOrganization(http);
      const b = await newOrganization(http);
      for (const org of [a, b]) {
        await grant(http, org, 'PURCHASED', 100);
        await reserve(http, org, textCredits(1));
      }
      const aCursor = (await ledgerPage(http, a, { first: 1 })).endCursor!;
      const decoded = Buffer.from(aCursor, 'base64url').toString('utf8');
      const forged = (text: string) => Buffer.from(text).toString('base64url');
      const admin = await t.token('admin');
      const refused: Array<[string, TestOrganization, string]> = [
        ["A's cursor used with B (admin may read both)", b, aCursor],
        ["A's cursor with B's id written into it", a, forged(decoded.replace(a.id, b.id))],
        ['a cursor of the old global-id form', a, forged('ledger:3')],
        ['a cursor pointing at entry 0', a, forged(`ledger:${a.id}:0`)],
        ['a cursor pointing at a negative entry', a, forged(`ledger:${a.id}:-1`)],
        ['a cursor with an entry number past 2^53', a, forged(`ledger:${a.id}:99999999999999999`)],
        ['a cursor with a NUL byte', a, forged(`ledger:${a.id}:1\u0000`)],
        [
          'a cursor with one character changed',
          a,
          `${aCursor.slice(0, 10)}${aCursor[10] === 'A' ? 'B' : 'A'}${aCursor.slice(11)}`,
        ],
        ['a 50 KB cursor', a, 'A'.repeat(50_000)],
        ['a cursor that is not base64', a, '!!not-a-cursor!!'],
      ];
      for (const [name, org, after] of refused) {
        const response = await send(t, { json: { query: LEDGER, variables: { id: org.id, after } }, token: admin });
        expect(response.status, name).toBe(200);
        expect(response.body.data, name).toBeNull();
        expect(response.body.errors, name).toEqual([
          expect.objectContaining({ extensions: expect.objectContaining({ code: 'BAD_USER_INPUT', field: 'after' }) }),
        ]);
        expect(response.text.length, name).toBeLessThan(1_000);
        expectNoLeak(response);
      }
      // The same cursor with its own organization pages on.
      const own = await send(t, { json: { query: LEDGER, variables: { id: a.id, after: aCursor } }, token: a.member });
      expect(own.body.errors).toBeUndefined();
      expect(own.body.data.ledger.edges).toHaveLength(2);
    });
  });
});
