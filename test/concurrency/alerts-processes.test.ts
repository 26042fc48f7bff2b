// Two real server processes (production settings) on one PostgreSQL database: 200 reservations at
// once, split across both, take an organization's available credits across an alert's threshold.
// The crossing is decided under the organization's lock in the transaction that made it, so it
// fires exactly once, whichever process wrote it; a further drop fires nothing, and once a grant
// brought the balance back, the next burst fires once more. A subscriber on one process hears
// every event, the other process's included, and the organization's webhook receives each event
// exactly once, from whichever process claimed its delivery.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { eq } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import { secretKey, signToken } from '../../src/auth/tokens.ts';
import { openDatabase } from '../../src/db/client.ts';
import { balanceAlertEvents, webhookDeliveries } from '../../src/db/schema.ts';
import { auditLedger } from '../../src/ledger/audit.ts';
import { createPostgresDatabase, hasPostgres } from '../support/database.ts';
import { gqlData } from '../support/graphql.ts';
import { CREATE_ORGANIZATION } from '../support/operations.ts';
import { subscribeSse } from '../support/realtime.ts';
import { uniqueKey } from '../support/scenario.ts';
import { SET_WEBHOOK, WebhookReceiver } from '../support/webhooks.ts';
import { SERVER_START_MS, stopServer, type StartedServer, startServerOn } from '../support/server-process.ts';

const SECRET = 'alerts-two-processes-secret-long-enough';
const RESERVE = `mutation ($input: ReserveCreditsInput!) { reserveCredits(input: $input) { __typename } }`;
const SET_ALERT = `mutation ($input: SetBalanceAlertInput!) {
  setBalanceAlert(input: $input) { __typename ... on SetBalanceAlertSuccess { alert { id armed } } } }`;
const GRANT = `mutation ($input: GrantCreditsInput!) { grantCredits(input: $input) { __typename } }`;
const BALANCE_ALERT = `subscription ($id: ID!) { balanceAlert(organizationId: $id) { id threshold available } }`;
const BURST = 200;

// Production, except that the receiver is a local http server.
const LOCAL_RECEIVER = { WEBHOOK_ALLOW_HTTP: '1', WEBHOOK_ALLOW_PRIVATE_ADDRESSES: '1' };

function startProductionServer(databaseUrl: string, dataDir: string): Promise<StartedServer> {
  return startServerOn({ databaseUrl, dataDir, secret: SECRET, nodeEnv: 'production', env: LOCAL_RECEIVER });
}

describe.skipIf(!hasPostgres)('balance alerts across two server processes (postgres)', () => {
  it(
    'fires exactly one event for 200 concurrent reservations that cross a threshold, none for a further drop, one again after going back above',
    async () => {
      const { url, drop } = await createPostgresDatabase();
      const dataDir = mkdtempSync(path.join(tmpdir(), 'credits-alerts-'));
      const servers: StartedServer[] = [];
      const database = await openDatabase({ databaseUrl: url, maxConnections: 2 });
      const receiver = await WebhookReceiver.start();
      try {
        servers.push(
          ...(await Promise.all([startProductionServer(url, dataDir), startProductionServer(url, dataDir)])),
        );
        const [first, second] = servers as [StartedServer, StartedServer];
        const key = secretKey(SECRET);
        const admin = await signToken({ subject: 'test-admin', role: 'admin', expiresIn: '1h' }, key);
        const created = await gqlData(
          first.url,
          CREATE_ORGANIZATION,
          { input: { name: 'Alerted', planId: 'starter' } }, // 1,000 credits
          { token: admin },
        );
        const organizationId = created.createOrganization.organization.id as string;
        const service = await signToken(
          {
            subject: 'backend',
            role: 'service',
            organizationId,
            scopes: ['generation', 'read', 'billing'],
            expiresIn: '1h',
          },
          key,
        );
        const set = await gqlData(
          second.url,
          SET_ALERT,
          { input: { organizationId, threshold: 900, idempotencyKey: 'low' } },
          { token: service },
        );
        expect(set.setBalanceAlert.alert.armed).toBe(true);
        const hooked = await gqlData(
          first.url,
          SET_WEBHOOK,
          { input: { organizationId, url: receiver.url } },
          { token: admin },
        );
        receiver.secrets = [hooked.setOrganizationWebhook.secret];

        // Listening on the second process, which writes only half of the reservations.
        const live = subscribeSse(second.baseUrl, service, BALANCE_ALERT, { id: organizationId });
        expect(await live.status).toBe(200);

        const burst = async () => {
          const answers = await Promise.all(
            Array.from({ length: BURST }, (_, i) =>
              gqlData(
                (i % 2 === 0 ? first : second).url,
                RESERVE,
                {
                  input: {
                    organizationId,
                    idempotencyKey: uniqueKey(),
                    generation: { modelId: 'text-draft', count: 1 },
                  },
                },
                { token: service },
              ),
            ),
          );
          for (const answer of answers) expect(answer.reserveCredits.__typename).toBe('ReserveCreditsSuccess');
        };
        const events = () =>
          database.db.select().from(balanceAlertEvents).where(eq(balanceAlertEvents.organizationId, organizationId));

        await burst(); // 1,000 → 800
        expect(await events()).toMatchObject([{ threshold: 900 }]);
        const [crossing] = await events();
        expect(crossing!.available).toBeLessThan(900);
        expect(crossing!.available).toBeGreaterThanOrEqual(800);

        await burst(); // 800 → 600: below all along
        expect(await events()).toHaveLength(1);

        const granted = await gqlData(
          first.url,
          GRANT,
          { input: { organizationId, type: 'PURCHASED', amount: 400, reason: 'top-up', idempotencyKey: 'top-up' } },
          { token: admin },
        );
        expect(granted.grantCredits.__typename).toBe('GrantCreditsSuccess'); // 1,000: re-armed
        await burst(); // 1,000 → 800: fires again, once
        const all = await events();
        expect(all).toHaveLength(2);

        await live.recording.waitFor((r) => r.events.length === 2);
        expect(live.recording.events.map((e) => e.data.balanceAlert.id).sort()).toEqual(all.map((e) => e.id).sort());
        live.close();

        // Each event reached the receiver once, signed, and its delivery says so.
        const received = await receiver.waitFor(2);
        await new Promise((resolve) => setTimeout(resolve, 1500)); // room for a duplicate to show up
        expect(received.map((m) => m.headers['webhook-id']).sort()).toEqual(all.map((e) => e.id).sort());
        for (const message of received) expect(message.verifiedWith).toHaveLength(1);
        const deliveries = await database.db
          .select()
          .from(webhookDeliveries)
          .where(eq(webhookDeliveries.organizationId, organizationId));
        expect(deliveries.map((d) => [d.status, d.attempts])).toEqual([
          ['DELIVERED', 1],
          ['DELIVERED', 1],
        ]);
        expect(await auditLedger(database.db)).toEqual([]);
      } finally {
        await receiver.close();
        for (const server of servers) await stopServer(server, 15_000);
        await database.close();
        await drop();
        rmSync(dataDir, { recursive: true, force: true });
      }
    },
    SERVER_START_MS + 120_000,
  );
});
