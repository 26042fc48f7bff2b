import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { networkInterfaces, tmpdir } from 'node:os';
import { decodeJwt } from 'jose';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.ts';
import { gql } from './support/graphql.ts';
import { spawnServer, startServer, stopServer } from './support/server-process.ts';

describe('configuration', () => {
  it('uses the documented defaults', () => {
    expect(loadConfig({})).toMatchObject({
      port: 4000,
      databaseUrl: undefined,
      sweepIntervalMs: 1000,
      production: false,
      logLevel: 'info',
    });
  });

  it('serves /metrics in production only with a METRICS_TOKEN', () => {
    const secret = { NODE_ENV: 'production', AUTH_SECRET: 'x'.repeat(32) };
    expect(loadConfig(secret)).toMatchObject({ metricsEnabled: false, metricsToken: null });
    expect(loadConfig({ ...secret, METRICS_TOKEN: 't'.repeat(16) })).toMatchObject({
      metricsEnabled: true,
      metricsToken: 't'.repeat(16),
    });
    expect(loadConfig({})).toMatchObject({ metricsEnabled: true, metricsToken: null });
  });

  it.each([
    [{ PORT: 'eighty' }, /PORT/],
    [{ PORT: '70000' }, /PORT/],
    [{ SWEEP_INTERVAL_MS: '-1' }, /SWEEP_INTERVAL_MS/],
    [{ DATABASE_URL: 'mysql://x' }, /DATABASE_URL/],
    [{ NODE_ENV: 'production' }, /AUTH_SECRET/],
    [{ AUTH_SECRET: 'short' }, /AUTH_SECRET/],
    [{ LOG_LEVEL: 'verbose' }, /LOG_LEVEL/],
    [{ METRICS_TOKEN: 'short' }, /METRICS_TOKEN/],
  ])('refuses %o', (env, message) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(message);
  });
});

describe('npm start', () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'credits-start-'));
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it('stops with one clear line in production without AUTH_SECRET', async () => {
    const server = spawnServer({ env: { PATH: process.env.PATH ?? '', NODE_ENV: 'production' } });
    expect(await server.exited).toBe(1);
    expect(server.stderr().trim().split('\n')).toEqual([
      'Configuration error: AUTH_SECRET is required when NODE_ENV=production.',
    ]);
  });

  it('seeds a demo organization on a fresh data folder, prints working tokens, and stops on SIGTERM', {
    timeout: 180_000,
  }, async () => {
    // A secret file left readable by others (a copy, a loose umask) is made owner-only on start.
    writeFileSync(path.join(dataDir, 'auth-secret'), 'a-development-secret-from-an-earlier-start', { mode: 0o644 });
    const server = await startServer({
      // Scopes required, as in production: the printed tokens carry scopes and still work.
      env: { PATH: process.env.PATH ?? '', DATA_DIR: dataDir, PORT: '0', TOKEN_SCOPES_REQUIRED: '1' },
      ready: (out) => out.includes('admin:') && out.includes('Bearer', out.indexOf('admin:')),
    });
    const { port, url } = server;
    const out = server.stdout();
    const organizationId = /Organization: (\S+)/.exec(out)?.[1];
    const member = /member:\s+\{"Authorization": "(Bearer [^"]+)"\}/.exec(out)?.[1];
    const admin = /admin:\s+\{"Authorization": "Bearer ([^"]+)"\}/.exec(out)?.[1];
    const service = /service:\s+\{"Authorization": "Bearer ([^"]+)"\}/.exec(out)?.[1];
    expect(decodeJwt(member!.slice('Bearer '.length)).scope).toBe('generation read');
    expect(decodeJwt(service!).scope).toBe('generation read billing');
    expect(decodeJwt(admin!).scope).toBeUndefined();
    expect(statSync(path.join(dataDir, 'auth-secret')).mode & 0o777).toBe(0o600);
    // Development binds to this machine only, and its printed tokens follow the token rules.
    expect(out).toMatch(/listening on 127\.0\.0\.1\)/);
    const external = Object.values(networkInterfaces())
      .flat()
      .find((address) => address && address.family === 'IPv4' && !address.internal);
    if (external) {
      await expect(
        fetch(`http://${external.address}:${port}/graphql`, { signal: AbortSignal.timeout(5000) }),
      ).rejects.toThrow();
    }
    const lifetime = (token: string) => decodeJwt(token).exp! - decodeJwt(token).iat!;
    expect(lifetime(member!.slice('Bearer '.length))).toBe(24 * 3600);
    expect(lifetime(admin!)).toBe(3600);
    const { data } = await gql(
      url,
      `{ balance(organizationId: "${organizationId}") { available accounts { type available } } }`,
      {},
      { headers: { authorization: member! } },
    );
    expect(data.balance.accounts.slice(0, 2)).toEqual([
      { type: 'SUBSCRIPTION', available: 5000 },
      { type: 'PURCHASED', available: 2000 },
    ]);
    const page = await fetch(url, { headers: { accept: 'text/html' } });
    expect(await page.text()).toContain('GraphiQL');
    // The server gives its graceful shutdown 5 s and then exits 1 on its own, so exit code 0 is
    // what proves a clean stop in time; the wait below is only there so a hung process fails the
    // test with a clear message instead of the test timeout.
    expect(await stopServer(server, 30_000)).toBe(0);
    expect(server.stdout()).toMatch(/SIGTERM received, shutting down/);
  });
});
