// The token in graphql-ws connectionParams as real clients send it (the `Authorization: Bearer …`
// header `npm start` prints, pasted as is, or nested in `headers`), and a reason a person can act
// on with every 4401 close. Runs against a listening server with graphql-ws's own client.
import { SignJWT } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createTestApp, TEST_SECRET, type TestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { BALANCE_CHANGED, connectWs, type WsConnection } from '../support/realtime.ts';
import { newOrganization, type TestOrganization } from '../support/scenario.ts';

const APP_START_MS = 180_000;
/** The WebSocket protocol's limit on a close reason (RFC 6455, 5.5: 125 bytes less the code). */
const CLOSE_REASON_BYTES_MAX = 123;

describe.each(drivers)('WebSocket authentication (%s)', (driver) => {
  let t: TestApp;
  let baseUrl: string;
  let org: TestOrganization;
  const connections: WsConnection[] = [];

  beforeAll(async () => {
    t = await createTestApp(driver);
    baseUrl = `http://127.0.0.1:${await t.app.listen(0, '127.0.0.1')}`;
    org = await newOrganization(t);
  }, APP_START_MS);
  afterEach(async () => {
    await Promise.all(connections.splice(0).map((connection) => connection.dispose()));
  });
  afterAll(() => t?.close());

  function connect(connectionParams: Record<string, unknown>): WsConnection {
    const connection = connectWs(baseUrl, null, { connectionParams });
    connections.push(connection);
    return connection;
  }

  /** Subscribes to the organization's balance and waits for its first event or the close. */
  async function firstAnswer(connectionParams: Record<string, unknown>) {
    const connection = connect(connectionParams);
    const { recording } = connection.subscribe(BALANCE_CHANGED, { id: org.id });
    await recording.waitFor((r) => r.balances.length > 0 || r.failure !== null || r.completed);
    return { connection, recording };
  }

  it.each([
    ['Authorization', (token: string) => ({ Authorization: `Bearer ${token}` })],
    ['AUTHORIZATION', (token: string) => ({ AUTHORIZATION: `Bearer ${token}` })],
    ['headers.Authorization', (token: string) => ({ headers: { Authorization: `Bearer ${token}` } })],
    ['headers.authorization', (token: string) => ({ headers: { authorization: `Bearer ${token}` } })],
    ['authorization', (token: string) => ({ authorization: `Bearer ${token}` })],
  ])('accepts the token as connectionParams %s', async (_shape, params) => {
    const { connection, recording } = await firstAnswer(params(org.member));
    expect(recording.failure, `closed ${connection.closeCode()} ${connection.closeReason()}`).toBeNull();
    expect(recording.balances[0]).toMatchObject({ organizationId: org.id, available: 100 });
  });

  it('reads the same token for the operations as for the connection', async () => {
    // The admin's token, nested: an admin may watch any organization, a member only its own, so
    // the balance arriving proves the operation ran as the admin.
    const other = await newOrganization(t);
    const admin = await t.token('admin');
    const connection = connect({ headers: { Authorization: `Bearer ${admin}` } });
    const { recording } = connection.subscribe(BALANCE_CHANGED, { id: other.id });
    await recording.waitFor((r) => r.balances.length > 0 || r.failure !== null);
    expect(recording.balances[0]?.organizationId).toBe(other.id);
  });

  it('closes with 4401 and a reason that says what to do, for each way a token fails', async () => {
    const forged = await new SignJWT({ role: 'member', org: org.id })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('intruder')
      .setIssuedAt()
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode('another-secret-that-is-long-enough-for-hs256'));
    const expired = await new SignJWT({ role: 'member', org: org.id })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('late')
      .setIssuedAt(Math.floor(Date.now() / 1000) - 120)
      .setExpirationTime(Math.floor(Date.now() / 1000) - 60)
      .sign(new TextEncoder().encode(TEST_SECRET));
    const cases: Array<[string, Record<string, unknown>, RegExp]> = [
      ['no token', {}, /^No token: send connectionParams \{ "Authorization": "Bearer <token>" \}/],
      ['a token that is not text', { Authorization: 42 }, /Authorization must be "Bearer <token>"/],
      ['a header without Bearer', { Authorization: org.member }, /must be "Bearer <token>"/],
      ['a token that is not a JWT', { Authorization: 'Bearer not-a-jwt' }, /not valid.*new token/],
      ['a forged signature', { Authorization: `Bearer ${forged}` }, /not valid.*new token/],
      ['an expired token', { headers: { Authorization: `Bearer ${expired}` } }, /^The token has expired\..*new token/],
      [
        'two different tokens',
        { authorization: `Bearer ${org.member}`, headers: { Authorization: `Bearer ${forged}` } },
        /two different Authorization values.*one/,
      ],
    ];
    for (const [what, params, reason] of cases) {
      const { connection, recording } = await firstAnswer(params);
      expect(recording.events, what).toEqual([]);
      expect(connection.closeCode(), what).toBe(4401);
      const text = connection.closeReason() ?? '';
      expect(text, what).toMatch(reason);
      expect(Buffer.byteLength(text, 'utf8'), what).toBeLessThanOrEqual(CLOSE_REASON_BYTES_MAX);
    }
  });

  it('closes a subscribe sent before connection_init with 4401 and says to initialise first', async () => {
    const socket = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}/graphql`, 'graphql-transport-ws');
    socket.on('error', () => {});
    const closed = new Promise<{ code: number; reason: string }>((resolve) =>
      socket.once('close', (code, reason) => resolve({ code, reason: String(reason) })),
    );
    await new Promise((resolve) => socket.once('open', resolve));
    socket.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: BALANCE_CHANGED } }));
    const { code, reason } = await closed;
    expect(code).toBe(4401);
    expect(reason).toMatch(/connection_init.*connection_ack/);
  });

  it('keeps the socket open when an operation is forbidden: the operation is answered FORBIDDEN', async () => {
    const other = await newOrganization(t);
    const connection = connect({ Authorization: `Bearer ${org.member}` });
    const own = connection.subscribe(BALANCE_CHANGED, { id: org.id }).recording;
    await own.waitFor((r) => r.balances.length > 0 || r.failure !== null);
    const { recording } = connection.subscribe(BALANCE_CHANGED, { id: other.id });
    await recording.waitForEnd();
    expect(recording.events[0]?.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect(recording.balances).toEqual([]);
    // The same socket still serves the caller's own organization.
    expect(own.balances[0]?.organizationId).toBe(org.id);
    expect(own.failure).toBeNull();
    expect(connection.closeCode()).toBeNull();
  });
});
