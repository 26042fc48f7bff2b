import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { secretKey, verifyAuthorization } from '../../src/auth/tokens.ts';
import { ManualClock } from '../../src/clock.ts';
import { openDatabase, type Database } from '../../src/db/client.ts';
import { setBalanceAlert } from '../../src/ledger/alerts.ts';
import { createOrganization } from '../../src/ledger/organizations.ts';
import { reserveCredits } from '../../src/ledger/reservations.ts';
import { claimDelivery, findDueDeliveries, recordAttempt } from '../../src/ledger/webhook-deliveries.ts';
import { setOrganizationWebhook } from '../../src/ledger/webhooks.ts';
import { createPostgresDatabase, hasPostgres } from '../support/database.ts';

// The `credits` binary, spawned as a process exactly as an operator runs it, against the
// embedded database in a temporary DATA_DIR and against PostgreSQL.

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = path.join(root, 'bin', 'credits.js');
const SECRET = 'cli-test-secret-that-is-long-enough-for-hs256';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

interface Target {
  env: Record<string, string>;
  open(): Promise<Database>;
  cleanup(): Promise<void>;
}

async function pgliteTarget(): Promise<Target> {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'credits-cli-'));
  return {
    env: { DATA_DIR: dataDir, DATABASE_URL: '' },
    open: () => openDatabase({ dataDir: path.join(dataDir, 'pglite') }),
    cleanup: async () => rmSync(dataDir, { recursive: true, force: true }),
  };
}

async function postgresTarget(): Promise<Target> {
  const { url, drop } = await createPostgresDatabase();
  const dataDir = mkdtempSync(path.join(tmpdir(), 'credits-cli-pg-'));
  return {
    env: { DATABASE_URL: url, DATA_DIR: dataDir },
    open: () => openDatabase({ databaseUrl: url, maxConnections: 2 }),
    cleanup: async () => {
      rmSync(dataDir, { recursive: true, force: true });
      await drop();
    },
  };
}

const targets: Array<[string, () => Promise<Target>]> = [['pglite', pgliteTarget]];
if (hasPostgres) targets.push(['postgres', postgresTarget]);

describe.each(targets)('credits command line (%s)', (driver, makeTarget) => {
  let target: Target;
  let organizationId: string;
  let organizationIdOfWebhook: string;

  function credits(...args: string[]): Promise<Run> {
    return creditsWith({}, ...args);
  }

  function creditsWith(env: Record<string, string>, ...args: string[]): Promise<Run> {
    return new Promise((resolve) => {
      execFile(
        process.execPath,
        [bin, ...args],
        { cwd: root, env: { ...process.env, AUTH_SECRET: SECRET, ...target.env, ...env }, timeout: 90_000 },
        (error, stdout, stderr) =>
          resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout, stderr }),
      );
    });
  }

  /** A refusal: a non-zero exit and exactly one line on stderr, with no stack trace. */
  function expectRefused(run: Run, message: RegExp, code = 1): void {
    expect(run.code, run.stderr).toBe(code);
    const lines = run.stderr.trim().split('\n');
    expect(lines, run.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(message);
    expect(run.stderr).not.toMatch(/\n\s+at /);
    expect(run.stdout).toBe('');
  }

  async function journalSize(): Promise<number> {
    const json = await credits('--json', 'balance', '--org', organizationId);
    return JSON.parse(json.stdout).version as number;
  }

  beforeAll(async () => {
    target = await makeTarget();
  });
  afterAll(() => target?.cleanup());

  it('creates an organization and prints its id alone on the last line; lists and shows it', async () => {
    const created = await credits('org', 'create', '--name', 'Acme Studio', '--plan', 'pro', '--anchor', '2026-01-31');
    expect(created.code, created.stderr).toBe(0);
    const lines = created.stdout.trim().split('\n');
    organizationId = lines.at(-1)!;
    expect(organizationId).toMatch(/^[0-9a-f-]{36}$/);
    expect(created.stdout).toMatch(/^name:\s+Acme Studio$/m);
    expect(created.stdout).toMatch(/^plan:\s+pro$/m);

    const list = await credits('org', 'list');
    expect(list.code, list.stderr).toBe(0);
    const [header, row] = list.stdout.trim().split('\n');
    expect(header).toMatch(/^ID\s+NAME\s+PLAN\s+CYCLE STARTS\s+CYCLE ENDS\s+CREATED$/);
    // Aligned columns: the second column starts at the same offset in the header and the row.
    expect(row!.indexOf('Acme Studio')).toBe(header!.indexOf('NAME'));
    expect(JSON.parse((await credits('--json', 'org', 'list')).stdout).map((org: { id: string }) => org.id)).toEqual([
      organizationId,
    ]);

    const shown = await credits('org', 'show', organizationId);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toMatch(/^cycle starts:\s+2026-\d\d-\d\dT/m);
    expect(shown.stdout).toMatch(/^SUBSCRIPTION\s+5000\s+0$/m);
    const json = JSON.parse((await credits('org', 'show', organizationId, '--json')).stdout);
    expect(json).toMatchObject({ id: organizationId, planId: 'pro', balance: { available: 5000, reserved: 0 } });
    expect(json.balance.accounts.map((account: { type: string }) => account.type)).toEqual([
      'SUBSCRIPTION',
      'PURCHASED',
      'PROMOTIONAL',
      'REFERRAL',
    ]);
  }, 120_000);

  it('grants through the ledger (a retry with the same key grants once) and shows the balance with each lot', async () => {
    const args = [
      'grant',
      '--org',
      organizationId,
      '--type',
      'promotional',
      '--amount',
      '250',
      '--reason',
      'launch promo',
      '--expires',
      '2099-01-01',
      '--key',
      'promo-1',
    ];
    const first = await credits(...args);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/^granted:\s+250$/m);
    const again = await credits('--json', ...args);
    expect(JSON.parse(again.stdout).id).toBe(/^lot:\s+(\S+)$/m.exec(first.stdout)![1]);

    const balance = await credits('balance', '--org', organizationId);
    expect(balance.code, balance.stderr).toBe(0);
    const lines = balance.stdout.split('\n');
    expect(lines.slice(0, 6)).toEqual([
      'ACCOUNT       AVAILABLE  RESERVED',
      'SUBSCRIPTION       5000         0',
      'PURCHASED             0         0',
      'PROMOTIONAL         250         0',
      'REFERRAL              0         0',
      'TOTAL              5250         0',
    ]);
    expect(balance.stdout).toMatch(/^LOT\s+ACCOUNT\s+AVAILABLE\s+RESERVED\s+EXPIRES$/m);
    expect(balance.stdout).toMatch(/PROMOTIONAL\s+250\s+0\s+2099-01-01T00:00:00.000Z/);

    // The grant is in the journal like any other: the audit agrees.
    const audit = await credits('audit');
    expect(audit.code, audit.stdout + audit.stderr).toBe(0);
    expect(audit.stdout).toMatch(/ledger consistent/);
  }, 120_000);

  it('refuses bad input with one clear line, a non-zero exit and nothing written', async () => {
    const version = await journalSize();
    expectRefused(
      await credits('grant', '--org', organizationId, '--type', 'gold', '--amount', '5', '--reason', 'x'),
      /--type.*expected one of SUBSCRIPTION, PURCHASED, PROMOTIONAL, REFERRAL/,
    );
    expectRefused(
      await credits('grant', '--org', organizationId, '--type', 'purchased', '--amount', '0', '--reason', 'x'),
      /--amount.*whole number/,
    );
    expectRefused(
      await credits(
        'grant',
        '--org',
        organizationId,
        '--type',
        'purchased',
        '--amount',
        '5',
        '--reason',
        'x',
        '--expires',
        '2099-02-30',
      ),
      /--expires.*expected a date/,
    );
    expectRefused(
      await credits(
        'grant',
        '--org',
        organizationId,
        '--type',
        'purchased',
        '--amount',
        '5',
        '--reason',
        'x',
        '--expires',
        '2099-02-01',
      ),
      /^error: PURCHASED credits never expire/,
    );
    expectRefused(
      await credits(
        'grant',
        '--org',
        organizationId,
        '--type',
        'promotional',
        '--amount',
        '9',
        '--reason',
        'other',
        '--key',
        'promo-1',
      ),
      /^error: This idempotency key was already used/,
    );
    expectRefused(
      await credits('grant', '--org', 'not-an-id', '--type', 'purchased', '--amount', '5', '--reason', 'x'),
      /--org.*organization id/,
    );
    expectRefused(
      await credits(
        'grant',
        '--org',
        '00000000-0000-4000-8000-000000000000',
        '--type',
        'purchased',
        '--amount',
        '5',
        '--reason',
        'x',
      ),
      /^error: No such organization/,
    );
    expectRefused(
      await credits('grant', '--org', organizationId, '--type', 'purchased', '--amount', '5'),
      /required option '--reason <text>'/,
    );
    expectRefused(
      await credits('org', 'create', '--name', 'X', '--plan', 'platinum'),
      /^error: There is no plan "platinum"/,
    );
    expectRefused(
      await credits('balance', '--org', '00000000-0000-4000-8000-000000000000'),
      /^error: No such organization/,
    );
    expectRefused(await credits('frobnicate'), /unknown command 'frobnicate'/);
    expect(await journalSize()).toBe(version);
    expect(JSON.parse((await credits('--json', 'org', 'list')).stdout)).toHaveLength(1);
  }, 180_000);

  it('prints --help for every command', async () => {
    for (const command of [
      [],
      ['org'],
      ['org', 'create'],
      ['org', 'list'],
      ['org', 'show'],
      ['grant'],
      ['balance'],
      ['token'],
      ['reset'],
      ['sweep'],
      ['audit'],
    ]) {
      const help = await credits(...command, '--help');
      expect(help.code, command.join(' ')).toBe(0);
      expect(help.stdout).toMatch(/^Usage: credits/);
    }
  }, 120_000);

  it('signs tokens with AUTH_SECRET that the server accepts, and refuses an admin token for one organization', async () => {
    const member = await credits('token', '--role', 'member', '--org', organizationId, '--ttl', '2h');
    expect(member.code, member.stderr).toBe(0);
    const viewer = await verifyAuthorization(`Bearer ${member.stdout.trim()}`, secretKey(SECRET));
    expect(viewer).toMatchObject({ role: 'member', organizationId, subject: 'cli-member' });
    expect(viewer.expiresAt! - Date.now() / 1000).toBeGreaterThan(7000);
    expect(viewer.expiresAt! - Date.now() / 1000).toBeLessThanOrEqual(7200);
    const admin = JSON.parse((await credits('--json', 'token', '--role', 'admin')).stdout);
    expect((await verifyAuthorization(`Bearer ${admin.token}`, secretKey(SECRET))).role).toBe('admin');
    expectRefused(
      await credits('token', '--role', 'admin', '--org', organizationId),
      /admin token acts for every organization/,
    );
    expectRefused(await credits('token', '--role', 'service'), /service token needs --org/);
    // Scopes, as the `scope` claim the service reads; unknown or repeated ones are refused.
    const billing = await credits(
      '--json',
      'token',
      '--role',
      'service',
      '--org',
      organizationId,
      '--scope',
      'generation,billing',
    );
    expect(billing.code, billing.stderr).toBe(0);
    expect(JSON.parse(billing.stdout).scopes).toEqual(['generation', 'billing']);
    expect(await verifyAuthorization(`Bearer ${JSON.parse(billing.stdout).token}`, secretKey(SECRET))).toMatchObject({
      role: 'service',
      scopes: ['generation', 'billing'],
    });
    expect(viewer.scopes).toBeNull();
    expectRefused(
      await credits('token', '--role', 'service', '--org', organizationId, '--scope', 'generation,superuser'),
      /--scope.*distinct scopes from generation, read, billing/,
    );
    expectRefused(
      await credits('token', '--role', 'service', '--org', organizationId, '--scope', 'read,read'),
      /--scope.*distinct scopes/,
    );
    expectRefused(
      await credits('token', '--role', 'member', '--org', organizationId, '--subject', 'x'.repeat(201)),
      /--subject must be printable text of 1 to 200 characters/,
    );
    // Where the service requires scopes, a member or service token without them is not signed.
    expectRefused(
      await creditsWith({ TOKEN_SCOPES_REQUIRED: '1' }, 'token', '--role', 'member', '--org', organizationId),
      /member token needs --scope here \(TOKEN_SCOPES_REQUIRED\)/,
    );
    expect((await creditsWith({ TOKEN_SCOPES_REQUIRED: '1' }, 'token', '--role', 'admin')).code).toBe(0);
    expectRefused(await credits('token', '--role', 'owner', '--org', organizationId), /--role.*member, service, admin/);
    expectRefused(
      await credits('token', '--role', 'member', '--org', organizationId, '--ttl', 'forever'),
      /--ttl.*duration/,
    );
    // Longer than the token rules allow the role: the service would refuse it, so it is not signed.
    expectRefused(await credits('token', '--role', 'admin', '--ttl', '2h'), /admin token may live at most 3600 s/);
    expectRefused(
      await credits('token', '--role', 'member', '--org', organizationId, '--ttl', '2d'),
      /member token may live at most 86400 s/,
    );
  }, 60_000);

  it('lists webhook deliveries and retries a failed one with a fresh series of attempts', async () => {
    const database = await target.open();
    const ctx = { db: database.db, clock: new ManualClock(new Date()) };
    let eventId: string;
    try {
      const created = await createOrganization(ctx, { name: 'Hooked', planId: 'free' });
      await setBalanceAlert(ctx, { organizationId: created.id, threshold: 50, idempotencyKey: 'cli-alert' });
      await setOrganizationWebhook(ctx, created.id, 'https://hooks.example.com/cli');
      await reserveCredits(ctx, {
        organizationId: created.id,
        idempotencyKey: 'cli-webhook',
        generation: { modelId: 'text-draft', count: 60 },
      });
      const [due] = await findDueDeliveries(database.db, ctx.clock.now(), [], 10);
      eventId = due!.eventId;
      const claim = await claimDelivery(database.db, due!, ctx.clock.now(), 30_000);
      // The last attempt failed: the delivery is over.
      await recordAttempt(
        database.db,
        claim!,
        { kind: 'failed', status: 500, error: 'the receiver answered 500', nextAttemptAt: null },
        ctx.clock.now(),
      );
      organizationIdOfWebhook = created.id;
    } finally {
      await database.close();
    }
    const list = await credits('webhooks', 'list', '--org', organizationIdOfWebhook);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toContain('https://hooks.example.com/cli');
    expect(list.stdout).toMatch(new RegExp(`${eventId}\\s+FAILED\\s+1\\s+500`));
    const retried = await credits('--json', 'webhooks', 'retry', '--org', organizationIdOfWebhook, '--event', eventId);
    expect(retried.code, retried.stderr).toBe(0);
    expect(JSON.parse(retried.stdout)).toMatchObject({ eventId, status: 'PENDING', attempts: 0 });
    const listed = JSON.parse((await credits('--json', 'webhooks', 'list', '--org', organizationIdOfWebhook)).stdout);
    expect(listed.deliveries).toMatchObject([{ eventId, status: 'PENDING', attempts: 0 }]);
    expectRefused(
      await credits(
        'webhooks',
        'retry',
        '--org',
        organizationIdOfWebhook,
        '--event',
        '00000000-0000-4000-8000-000000000000',
      ),
      /No such webhook delivery/,
    );
    expectRefused(await credits('webhooks', 'retry', '--org', organizationIdOfWebhook, '--event', 'nope'), /event id/);
  }, 60_000);

  it('sweeps an expired reservation back, and says when no cycle is due for reset', async () => {
    // A reservation made an hour ago with a minute to live: due for the sweeper now.
    const database = await target.open();
    const reservation = await reserveCredits(
      { db: database.db, clock: new ManualClock(new Date(Date.now() - 3_600_000)) },
      {
        organizationId,
        idempotencyKey: 'cli-expired',
        generation: { modelId: 'text-draft', count: 30 },
        ttlSeconds: 60,
      },
    );
    await database.close();
    expect(JSON.parse((await credits('--json', 'balance', '--org', organizationId)).stdout).reserved).toBe(
      reservation.amount,
    );

    const sweep = await credits('--json', 'sweep');
    expect(sweep.code, sweep.stderr).toBe(0);
    expect(JSON.parse(sweep.stdout)).toMatchObject({ refundedReservations: 1, failedItems: 0 });
    expect(JSON.parse((await credits('--json', 'balance', '--org', organizationId)).stdout)).toMatchObject({
      reserved: 0,
      available: 5250,
    });

    const reset = await credits('reset', '--org', organizationId);
    expect(reset.code, reset.stderr).toBe(0);
    expect(reset.stdout).toMatch(/^No cycle was due: the current one ends 20\d\d-/);
    expect((await credits('audit')).code).toBe(0);
  }, 120_000);

  it.runIf(driver === 'postgres')(
    'announces a grant to listening servers like the API does (NOTIFY balance_changed)',
    async () => {
      const listener = postgres(target.env.DATABASE_URL!, { max: 1, onnotice: () => {} });
      const heard: string[] = [];
      try {
        await listener.listen('balance_changed', (payload) => heard.push(payload));
        const version = await journalSize();
        const granted = await credits(
          'grant',
          '--org',
          organizationId,
          '--type',
          'purchased',
          '--amount',
          '10',
          '--reason',
          'support credit',
        );
        expect(granted.code, granted.stderr).toBe(0);
        await expect.poll(() => heard, { timeout: 10_000 }).toContain(`${organizationId}:${version + 1}`);
      } finally {
        await listener.end();
      }
    },
    60_000,
  );

  it.runIf(driver === 'pglite')(
    'refuses to open the embedded database while another live process has it open',
    async () => {
      // The test process stands in for a running server: its id is in the claim file.
      writeFileSync(path.join(target.env.DATA_DIR!, 'credits.pid'), String(process.pid));
      try {
        expectRefused(
          await credits('balance', '--org', organizationId),
          new RegExp(`process ${process.pid} has the embedded database`),
          2,
        );
      } finally {
        rmSync(path.join(target.env.DATA_DIR!, 'credits.pid'), { force: true });
      }
      // A claim left by a process that is gone (a killed server) is taken over.
      writeFileSync(path.join(target.env.DATA_DIR!, 'credits.pid'), '999999999');
      expect((await credits('balance', '--org', organizationId)).code).toBe(0);
    },
    60_000,
  );
});

describe('credits command line without a database', () => {
  it('exits 2 for a read on an empty DATA_DIR rather than creating a database', async () => {
    const empty = mkdtempSync(path.join(tmpdir(), 'credits-cli-empty-'));
    try {
      const run = await new Promise<Run>((resolve) =>
        execFile(
          process.execPath,
          [bin, 'org', 'list'],
          { cwd: root, env: { ...process.env, DATA_DIR: empty, DATABASE_URL: '' } },
          (error, stdout, stderr) => resolve({ code: error ? Number(error.code) : 0, stdout, stderr }),
        ),
      );
      expect(run.code).toBe(2);
      expect(run.stderr.trim()).toMatch(/^No database: DATABASE_URL is unset and .* does not exist\.$/);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
