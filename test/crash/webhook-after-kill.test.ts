// A webhook survives a crash: the real server (production settings, a local receiver allowed) is
// killed with SIGKILL while the attempt to deliver an alert event that had just committed is in
// flight (the receiver holds the request without answering). Nothing of the delivery was recorded
// as done, so after a restart the delivery is claimed again once the dead process's lease ran out,
// and the receiver gets the event, signed with the organization's secret and verified with the
// specification's algorithm, under the same webhook-id: at least once, deduplicable.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { eq } from 'drizzle-orm';
import { afterAll, describe, expect, it } from 'vitest';
import { secretKey, signToken } from '../../src/auth/tokens.ts';
import { openDatabase } from '../../src/db/client.ts';
import { balanceAlertEvents, webhookDeliveries } from '../../src/db/schema.ts';
import { createPostgresDatabase, hasPostgres } from '../support/database.ts';
import { gqlData } from '../support/graphql.ts';
import { CREATE_ORGANIZATION } from '../support/operations.ts';
import { uniqueKey } from '../support/scenario.ts';
import { killRunningServers, SERVER_START_MS, startServerOn, stopServer } from '../support/server-process.ts';
import { SET_WEBHOOK, WebhookReceiver } from '../support/webhooks.ts';

const SECRET = 'webhook-crash-test-secret-long-enough';
const RESERVE = `mutation ($input: ReserveCreditsInput!) { reserveCredits(input: $input) { __typename } }`;
const SET_ALERT = `mutation ($input: SetBalanceAlertInput!) { setBalanceAlert(input: $input) { __typename } }`;
const LOCAL_RECEIVER = { WEBHOOK_ALLOW_HTTP: '1', WEBHOOK_ALLOW_PRIVATE_ADDRESSES: '1' };
// The dead process's lease: the attempt timeout (10 s) and 20 s more, then the first poll.
const LEASE_MS = 30_000;

afterAll(() => killRunningServers());

describe.skipIf(!hasPostgres)('a webhook delivery after SIGKILL (postgres)', () => {
  it(
    'delivers, after a restart, the event whose attempt was in flight when the server was killed',
    async () => {
      const { url, drop } = await createPostgresDatabase();
      const dataDir = mkdtempSync(path.join(tmpdir(), 'credits-webhook-crash-'));
      const database = await openDatabase({ databaseUrl: url, maxConnections: 2 });
      const receiver = await WebhookReceiver.start();
      const start = () =>
        startServerOn({ databaseUrl: url, dataDir, secret: SECRET, nodeEnv: 'production', env: LOCAL_RECEIVER });
      try {
        const server = await start();
        const key = secretKey(SECRET);
        const admin = await signToken({ subject: 'test-admin', role: 'admin', expiresIn: '1h' }, key);
        const created = await gqlData(
          server.url,
          CREATE_ORGANIZATION,
          { input: { name: 'Crashed', planId: 'free' } }, // 100 credits
          { token: admin },
        );
        const organizationId = created.createOrganization.organization.id as string;
        const service = await signToken(
          { subject: 'backend', role: 'service', organizationId, scopes: ['generation', 'billing'], expiresIn: '1h' },
          key,
        );
        await gqlData(
          server.url,
          SET_ALERT,
          { input: { organizationId, threshold: 50, idempotencyKey: 'low' } },
          { token: service },
        );
        const hooked = await gqlData(
          server.url,
          SET_WEBHOOK,
          { input: { organizationId, url: receiver.url } },
          { token: admin },
        );
        receiver.secrets = [hooked.setOrganizationWebhook.secret];

        receiver.mode = 'hang';
        const reserved = await gqlData(
          server.url,
          RESERVE,
          {
            input: {
              organizationId,
              idempotencyKey: uniqueKey(),
              generation: { modelId: 'text-draft', count: 60 },
            },
          },
          { token: service },
        );
        expect(reserved.reserveCredits.__typename).toBe('ReserveCreditsSuccess');
        const [first] = await receiver.waitFor(1);
        server.child.kill('SIGKILL');
        await server.exited;

        const [event] = await database.db
          .select()
          .from(balanceAlertEvents)
          .where(eq(balanceAlertEvents.organizationId, organizationId));
        expect(first!.headers['webhook-id']).toBe(event!.id);
        const [inFlight] = await database.db
          .select()
          .from(webhookDeliveries)
          .where(eq(webhookDeliveries.organizationId, organizationId));
        expect(inFlight).toMatchObject({ status: 'PENDING', attempts: 1, deliveredAt: null });
        expect(inFlight!.leaseUntil).not.toBeNull();

        receiver.mode = 'ok';
        const restarted = await start();
        try {
          const [, again] = await receiver.waitFor(2, LEASE_MS + 30_000);
          expect(again!.headers['webhook-id']).toBe(event!.id);
          expect(again!.verifiedWith).toEqual(receiver.secrets);
          expect(again!.payload).toMatchObject({ id: event!.id, type: 'balance.alert', data: { organizationId } });
          await expect
            .poll(
              async () =>
                (
                  await database.db
                    .select()
                    .from(webhookDeliveries)
                    .where(eq(webhookDeliveries.organizationId, organizationId))
                )[0],
              { timeout: 5000 },
            )
            .toMatchObject({ status: 'DELIVERED', attempts: 2, lastHttpStatus: 204 });
        } finally {
          await stopServer(restarted, 15_000);
        }
      } finally {
        await receiver.close();
        await database.close();
        await drop();
        rmSync(dataDir, { recursive: true, force: true });
      }
    },
    2 * SERVER_START_MS + LEASE_MS + 60_000,
  );
});
