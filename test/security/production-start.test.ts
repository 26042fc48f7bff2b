// `npm start` with NODE_ENV=production, as a deployment runs it: what production turns off or
// restricts (issue 13) holds for the real process, not only for createApp's options.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { secretKey, signToken } from '../../src/auth/tokens.ts';
import { graphqlRequest } from '../support/graphql.ts';
import { BALANCE, CREATE_ORGANIZATION, QUOTE } from '../support/operations.ts';
import { startServer } from '../support/server-process.ts';

const SECRET = 'production-start-secret-long-enough-for-hs256';
const dataDir = mkdtempSync(path.join(tmpdir(), 'credits-production-'));

describe('a production process', () => {
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it('serves no GraphiQL, no schema hints, no CORS and no form posts, and listens on every interface', {
    timeout: 180_000,
  }, async () => {
    // As long as the test may take: how fast a loaded machine starts is not what this test is about.
    const server = await startServer({
      env: {
        PATH: process.env.PATH ?? '',
        NODE_ENV: 'production',
        AUTH_SECRET: SECRET,
        PORT: '0',
        DATA_DIR: dataDir,
        SWEEP_INTERVAL_MS: '60000',
      },
      startMs: 180_000,
    });
    try {
      const stdout = server.stdout();
      expect(stdout).toMatch(/listening on 0\.0\.0\.0\)/);
      // No demo tokens are printed in production.
      expect(stdout).not.toMatch(/Bearer/);
      const { url } = server;

      const page = await fetch(url, { headers: { accept: 'text/html' } });
      expect(await page.text()).not.toMatch(/GraphiQL/);

      const token = await signToken({ subject: 'prod', role: 'admin', expiresIn: '10m' }, secretKey(SECRET));
      const post = (query: string, variables?: Record<string, unknown>, headers?: Record<string, string>) =>
        fetch(url, graphqlRequest(query, variables, { token, headers }));
      const coercion = await post(QUOTE, {
        id: '00000000-0000-4000-8000-000000000000',
        generation: { modelId: 'x', resolution: 'HD_72' },
      });
      const coercionText = await coercion.text();
      expect(coercionText).toMatch(/HD_72/);
      expect(coercionText).not.toMatch(/Did you mean|HD_720P/);

      const crossSite = await post('{ plans { id } }', undefined, { origin: 'https://evil.example' });
      expect(crossSite.headers.get('access-control-allow-origin')).toBeNull();
      expect((await crossSite.json()) as unknown).toMatchObject({ data: { plans: expect.any(Array) } });

      const form = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: `query=${encodeURIComponent('{ plans { id } }')}`,
      });
      expect(form.status).toBe(403);

      // Scoped tokens are required: a member token without a scope claim is refused with the fix.
      const created = (await (
        await post(CREATE_ORGANIZATION, { input: { name: 'Scoped', planId: 'free' } })
      ).json()) as {
        data: { createOrganization: { organization: { id: string } } };
      };
      const organizationId = created.data.createOrganization.organization.id;
      const member = (scopes?: ['read']) =>
        signToken(
          { subject: 'prod-member', role: 'member', organizationId, scopes, expiresIn: '10m' },
          secretKey(SECRET),
        );
      const unscoped = (await (
        await fetch(url, graphqlRequest(BALANCE, { id: organizationId }, { token: await member() }))
      ).json()) as {
        errors: Array<{ message: string; extensions: { code: string } }>;
      };
      expect(unscoped.errors[0]!.extensions.code).toBe('UNAUTHENTICATED');
      expect(unscoped.errors[0]!.message).toMatch(/no "scope" claim/);
      const scoped = (await (
        await fetch(url, graphqlRequest(BALANCE, { id: organizationId }, { token: await member(['read']) }))
      ).json()) as {
        data: { balance: { organizationId: string } };
      };
      expect(scoped.data.balance.organizationId).toBe(organizationId);
    } finally {
      server.child.kill('SIGTERM');
      expect(await server.exited).toBe(0);
    }
  });
});
