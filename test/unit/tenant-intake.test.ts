import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { Viewer } from '../../src/auth/tokens.ts';
import { TenantIntake, intakeKeyOf, withFairIntake } from '../../src/server/tenant-intake.ts';

const ORG_A = '11111111-1111-4111-8111-111111111111';
const ORG_B = '22222222-2222-4222-8222-222222222222';

const viewer = (organizationId: string | null, subject = 's'): Viewer => ({
  subject,
  role: organizationId ? 'service' : 'admin',
  organizationId,
  expiresAt: null,
  scopes: null,
});

describe('tenant intake', () => {
  it('lets a caller work on `concurrent` requests at once and hands each freed slot to the next, in order', async () => {
    const intake = new TenantIntake({ concurrent: 2, waitingMax: 10 });
    const first = (await intake.enter('a'))!;
    const second = (await intake.enter('a'))!;
    const started: number[] = [];
    const startedAs = (n: number) => (release: (() => void) | null) => {
      started.push(n);
      return release!;
    };
    const third = Promise.resolve(intake.enter('a')).then(startedAs(3));
    const fourth = Promise.resolve(intake.enter('a')).then(startedAs(4));
    // Another caller is not held up by the first one's queue.
    const other = await intake.enter('b');
    expect(other).toBeTypeOf('function');
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(started).toEqual([]);
    expect(intake.stats('a')).toEqual({ running: 2, waiting: 2 });
    first();
    first(); // a second release of the same slot frees nothing more
    await third;
    expect(started).toEqual([3]);
    expect(intake.stats('a')).toEqual({ running: 2, waiting: 1 });
    second();
    const releaseFourth = await fourth;
    expect(started).toEqual([3, 4]);
    (await third)();
    releaseFourth();
    expect(intake.stats('a')).toEqual({ running: 0, waiting: 0 });
  });

  it('refuses a request once `waitingMax` of its caller already wait', async () => {
    const intake = new TenantIntake({ concurrent: 1, waitingMax: 1 });
    await intake.enter('a');
    void intake.enter('a');
    expect(await intake.enter('a')).toBeNull();
  });

  it('keys members and services by organization and admins by subject', () => {
    expect(intakeKeyOf(viewer(ORG_A, 'x'))).toBe(intakeKeyOf(viewer(ORG_A, 'y')));
    expect(intakeKeyOf(viewer(ORG_A))).not.toBe(intakeKeyOf(viewer(ORG_B)));
    expect(intakeKeyOf(viewer(null, 'ops-1'))).not.toBe(intakeKeyOf(viewer(null, 'ops-2')));
  });
});

describe('fair intake over HTTP', () => {
  let server: Server | null = null;
  let baseUrl = '';
  const base = () => baseUrl;
  afterEach(async () => {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    server = null;
  });

  /** A server whose handler answers a request only when the test says so. */
  async function serve(intake: TenantIntake) {
    const pending: Array<{ path: string; answer: () => void }> = [];
    const handler: RequestListener = (request, response) =>
      pending.push({ path: request.url!, answer: () => response.end('ok') });
    const tokens: Record<string, Viewer> = { 'Bearer a': viewer(ORG_A), 'Bearer b': viewer(ORG_B) };
    server = createServer(
      withFairIntake(handler, intake, async (authorization) => {
        const known = tokens[authorization];
        if (!known) throw new Error('refused');
        return known;
      }),
    );
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', () => resolve()));
    const base = `http://127.0.0.1:${(server!.address() as AddressInfo).port}`;
    const send = (path: string, headers: Record<string, string>) => fetch(`${base}${path}`, { headers });
    baseUrl = base;
    return { pending, send };
  }

  const until = async (condition: () => boolean) => {
    for (let i = 0; i < 200 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(condition()).toBe(true);
  };

  it("holds a caller's extra requests before the handler sees them, while other callers pass", async () => {
    const { pending, send } = await serve(new TenantIntake({ concurrent: 1, waitingMax: 5 }));
    const a1 = send('/a1', { authorization: 'Bearer a' });
    const a2 = send('/a2', { authorization: 'Bearer a' });
    const b1 = send('/b1', { authorization: 'Bearer b' });
    const stream = send('/a-stream', { authorization: 'Bearer a', accept: 'text/event-stream' });
    const bad = send('/bad', { authorization: 'Bearer nobody' });
    const open = send('/health', {});
    await until(() => pending.length === 5);
    await new Promise((resolve) => setTimeout(resolve, 50));
    // a2 waits for a1; the event stream, the unknown token and the token-less request pass.
    expect(pending.map((p) => p.path).sort()).toEqual(['/a-stream', '/a1', '/b1', '/bad', '/health']);
    pending.find((p) => p.path === '/a1')!.answer();
    expect((await a1).status).toBe(200);
    await until(() => pending.some((p) => p.path === '/a2'));
    for (const p of pending) if (p.path !== '/a1') p.answer();
    expect((await Promise.all([a2, b1, stream, bad, open])).map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
  });

  it('gives back the slot of a request whose client gave up while it waited', async () => {
    const { pending, send } = await serve(new TenantIntake({ concurrent: 1, waitingMax: 5 }));
    const first = send('/1', { authorization: 'Bearer a' });
    await until(() => pending.length === 1);
    const abandoned = new AbortController();
    const gaveUp = fetch(`${base()}/2`, { headers: { authorization: 'Bearer a' }, signal: abandoned.signal }).catch(
      (error: Error) => error.name,
    );
    await new Promise((resolve) => setTimeout(resolve, 50));
    abandoned.abort();
    expect(await gaveUp).toBe('AbortError');
    await new Promise((resolve) => setTimeout(resolve, 50));
    pending[0]!.answer();
    expect((await first).status).toBe(200);
    // The abandoned request's turn came and went without reaching the handler; the next one runs.
    const next = send('/3', { authorization: 'Bearer a' });
    await until(() => pending.some((p) => p.path === '/3'));
    expect(pending.map((p) => p.path)).toEqual(['/1', '/3']);
    pending[1]!.answer();
    expect((await next).status).toBe(200);
  });

  it('answers 429 with Retry-After once too many of a caller wait', async () => {
    const { pending, send } = await serve(new TenantIntake({ concurrent: 1, waitingMax: 1 }));
    const first = send('/1', { authorization: 'Bearer a' });
    await until(() => pending.length === 1);
    const second = send('/2', { authorization: 'Bearer a' });
    await new Promise((resolve) => setTimeout(resolve, 50));
    const third = await send('/3', { authorization: 'Bearer a' });
    expect(third.status).toBe(429);
    expect(third.headers.get('retry-after')).toBe('1');
    expect((await third.json()).errors[0].extensions.code).toBe('RATE_LIMITED');
    pending[0]!.answer();
    await until(() => pending.length === 2);
    pending[1]!.answer();
    expect((await first).status).toBe(200);
    expect((await second).status).toBe(200);
  });
});
