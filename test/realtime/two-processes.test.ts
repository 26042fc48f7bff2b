import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import { describe, expect, it } from 'vitest';
import { secretKey, signToken } from '../../src/auth/tokens.ts';
import { createPostgresDatabase, hasPostgres } from '../support/database.ts';
import { gqlData } from '../support/graphql.ts';
import { CREATE_ORGANIZATION, RESERVE } from '../support/operations.ts';
import { BALANCE_CHANGED, connectWs, type WsConnection } from '../support/realtime.ts';
import { textCredits, uniqueKey } from '../support/scenario.ts';
import { SERVER_START_MS, stopServer, type StartedServer, startServerOn } from '../support/server-process.ts';

const SECRET = 'two-process-test-secret-long-enough-for-hs256';

/** `node --import tsx src/main.ts` as production runs it, on a free port; resolves once it serves. */
function startTestServer(databaseUrl: string, dataDir: string): Promise<StartedServer> {
  return startServerOn({ databaseUrl, dataDir, secret: SECRET, nodeEnv: 'test' });
}

// Exiting on SIGTERM before the orchestrator's SIGKILL is the feature: Kubernetes waits 30 s by
// default. The server itself gives stragglers 2 s; the rest of the margin is for a loaded machine.
const SIGTERM_EXIT_MS = 25_000;

describe.skipIf(!hasPostgres)('live balance across two server processes (postgres)', () => {
  it(
    'delivers a change made on one process to a subscriber on the other, and resyncs it after the listener is killed',
    async () => {
      const { url, drop } = await createPostgresDatabase();
      const dataDir = mkdtempSync(path.join(tmpdir(), 'credits-two-processes-'));
      const servers: StartedServer[] = [];
      let connection: WsConnection | null = null;
      const admin = postgres(url, { max: 1, onnotice: () => {} });
      try {
        // Both start (and migrate, one after the other under the advisory lock) together.
        servers.push(...(await Promise.all([startTestServer(url, dataDir), startTestServer(url, dataDir)])));
        const [a, b] = servers as [StartedServer, StartedServer];
        const key = secretKey(SECRET);
        const adminToken = await signToken({ subject: 'test-admin', role: 'admin', expiresIn: '1h' }, key);
        const created = await gqlData(
          b.url,
          CREATE_ORGANIZATION,
          { input: { name: 'Two processes', planId: 'free' } },
          { token: adminToken },
        );
        const orgId = created.createOrganization.organization.id as string;
        const member = await signToken(
          { subject: 'test-member', role: 'member', organizationId: orgId, expiresIn: '1h' },
          key,
        );

        connection = connectWs(a.baseUrl, member);
        const { recording } = connection.subscribe(BALANCE_CHANGED, { id: orgId });
        await recording.waitFor((r) => r.balances.length === 1);
        const [first] = recording.versions;
        expect(recording.lastBalance).toMatchObject({ available: 100, reserved: 0 });

        // Reserved on B, seen on A.
        const reserveOn = (server: StartedServer, credits: number) =>
          gqlData(
            server.url,
            RESERVE,
            { input: { organizationId: orgId, idempotencyKey: uniqueKey(), generation: textCredits(credits) } },
            { token: member },
          );
        await reserveOn(b, 10);
        await recording.waitForVersion(first! + 1);
        expect(recording.lastBalance).toMatchObject({ available: 90, reserved: 10 });

        // Kill every listening backend (both processes'); A reconnects and re-sends the balance.
        const killed = await admin`
        select pg_terminate_backend(pid) as terminated from pg_stat_activity
        where datname = current_database() and application_name = 'credits-listener'`;
        expect(killed.map((row) => row.terminated)).toEqual([true, true]);
        await recording.waitFor((r) => r.versions.length === 3);
        expect(recording.versions).toEqual([first, first! + 1, first! + 1]);

        // And it hears B again.
        await reserveOn(b, 20);
        await recording.waitForVersion(first! + 2);
        expect(recording.lastBalance).toMatchObject({ available: 70, reserved: 30 });

        // SIGTERM: the open subscription is completed and both processes exit 0.
        expect(await Promise.all(servers.map((server) => stopServer(server, SIGTERM_EXIT_MS)))).toEqual([0, 0]);
        await recording.waitForEnd();
        expect(recording.completed).toBe(true);
      } finally {
        await connection?.dispose();
        for (const server of servers) if (server.child.exitCode === null) server.child.kill('SIGKILL');
        await Promise.all(servers.map((server) => server.exited));
        await admin.end();
        await drop();
        rmSync(dataDir, { recursive: true, force: true });
      }
    },
    SERVER_START_MS + 120_000,
  );
});
