// `npm start` with NODE_ENV=production, as a deployment runs it: what production turns off or
// restricts (issue 13) holds for the real process, not only for createApp's options.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { secretKey, signToken } from '../../src/auth/tokens.ts';
import { QUOTE } from '../support/operations.ts';

const SECRET = 'production-start-secret-long-enough-for-hs256';
const root = path.resolve(import.meta.dirname, '../..');
const dataDir = mkdtempSync(path.join(tmpdir(), 'credits-production-'));

describe('a production process', () => {
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it('serves no GraphiQL, no schema hints, no CORS and no form posts, and listens on every interface', {
    timeout: 180_000,
  }, async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      cwd: root,
      env: {
        PATH: process.env.PATH ?? '',
        NODE_ENV: 'production',
        AUTH_SECRET: SECRET,
        PORT: '0',
        DATA_DIR: dataDir,
        SWEEP_INTERVAL_MS: '60000',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    try {
      const port = await new Promise<number>((resolve, reject) => {
        child.stdout.on('data', () => {
          const match = /Credits API on http:\/\/localhost:(\d+)\/graphql/.exec(stdout);
          if (match) resolve(Number(match[1]));
        });
        void exited.then((code) => reject(new Error(`exited with ${code} before serving: ${stdout}`)));
      });
      expect(stdout).toMatch(/listening on 0\.0\.0\.0\)/);
      // No demo tokens are printed in production.
      expect(stdout).not.toMatch(/Bearer/);
      const url = `http://127.0.0.1:${port}/graphql`;

      const page = await fetch(url, { headers: { accept: 'text/html' } });
      expect(await page.text()).not.toMatch(/GraphiQL/);

      const token = await signToken({ subject: 'prod', role: 'admin', expiresIn: '10m' }, secretKey(SECRET));
      const post = (body: unknown, headers: Record<string, string> = {}) =>
        fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, ...headers },
          body: JSON.stringify(body),
        });
      const coercion = await post({
        query: QUOTE,
        variables: { id: '00000000-0000-4000-8000-000000000000', generation: { modelId: 'x', resolution: 'HD_72' } },
      });
      const coercionText = await coercion.text();
      expect(coercionText).toMatch(/HD_72/);
      expect(coercionText).not.toMatch(/Did you mean|HD_720P/);

      const crossSite = await post({ query: '{ plans { id } }' }, { origin: 'https://evil.example' });
      expect(crossSite.headers.get('access-control-allow-origin')).toBeNull();
      expect((await crossSite.json()) as unknown).toMatchObject({ data: { plans: expect.any(Array) } });

      const form = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: `query=${encodeURIComponent('{ plans { id } }')}`,
      });
      expect(form.status).toBe(403);
    } finally {
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    }
  });
});
