// Raw HTTP requests and hand-made tokens for the security suites.
import { SignJWT } from 'jose';
import { sql } from 'drizzle-orm';
import { expect } from 'vitest';
import { rowsOf } from '../../src/db/client.ts';
import { TEST_SECRET, type TestApp } from '../support/app.ts';

export interface RawRequest {
  method?: string;
  /** Sent as is; `json` is stringified instead when given. */
  body?: string | ReadableStream<Uint8Array>;
  json?: unknown;
  token?: string | null;
  /** A whole Authorization header value, for malformed ones. */
  authorization?: string;
  headers?: Record<string, string>;
  search?: string;
}

/** What the response body was: JSON (with its value), empty, or something that is not JSON. */
export type BodyKind = 'json' | 'empty' | 'unparsable';

export interface RawResponse {
  status: number;
  headers: Headers;
  text: string;
  /** The parsed JSON body. */
  body: any;
}

/** What `send` answers: the body's kind is told apart, and `body` is only readable as JSON. */
export interface SentResponse extends RawResponse {
  bodyKind: BodyKind;
  /**
   * The parsed JSON body. Reading it when the body was empty or not a JSON object fails the test
   * (it never stands in as `null`); check `bodyKind` first for a response that may be either.
   */
  readonly body: any;
}

/**
 * Sends one request through the whole yoga pipeline in process. It asks for
 * `application/graphql-response+json`, so statuses follow the GraphQL-over-HTTP spec as yoga
 * implements it (400 for requests that cannot be executed, 200 once execution starts).
 */
export async function send(t: TestApp, request: RawRequest): Promise<SentResponse> {
  const headers: Record<string, string> = {
    accept: 'application/graphql-response+json',
    'content-type': 'application/json',
    ...request.headers,
  };
  if (request.authorization !== undefined) headers.authorization = request.authorization;
  else if (request.token) headers.authorization = `Bearer ${request.token}`;
  const body = request.json !== undefined ? JSON.stringify(request.json) : request.body;
  const init: RequestInit & { duplex?: 'half' } = { method: request.method ?? 'POST', headers, body };
  if (body instanceof ReadableStream) init.duplex = 'half';
  const response = await t.app.yoga.fetch(`http://localhost/graphql${request.search ?? ''}`, init);
  const text = await response.text();
  let bodyKind: BodyKind = text ? 'json' : 'empty';
  let parsed: unknown;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      bodyKind = 'unparsable';
    }
  }
  return {
    status: response.status,
    headers: response.headers,
    text,
    bodyKind,
    get body(): any {
      if (bodyKind !== 'json' || typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
        throw new Error(
          `expected a JSON object body, got ${bodyKind === 'json' ? `the JSON ${text.slice(0, 100)}` : `${bodyKind} body ${JSON.stringify(text.slice(0, 200))}`} (HTTP ${response.status})`,
        );
      }
      return parsed;
    },
  };
}

// What must never reach a client: stack frames, file paths, driver or SQL detail, yoga's masked
// placeholder (an unexpected error is a bug, not an answer) or the parser's echo of the body.
const LEAKS = [
  /"stack"/,
  /\bat .+\.(ts|js|mjs|cjs):\d+/,
  /node_modules/,
  /\/work\//,
  /drizzle/i,
  /failed query/i,
  /postgres|pglite/i,
  /\b(select|insert|update)\b.+\b(from|into|set)\b/i,
  /INTERNAL_SERVER_ERROR/,
  /Unexpected error/,
  /originalError/,
];

export function expectNoLeak(response: RawResponse): void {
  for (const pattern of LEAKS) expect(response.text, `response leaks ${pattern}`).not.toMatch(pattern);
}

const key = () => new TextEncoder().encode(TEST_SECRET);

function base64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

/** A correctly signed service token (unless `claims` says otherwise) with these claims. */
function signed(claims: Record<string, unknown>): Promise<string> {
  return new SignJWT({ role: 'service', sub: 'svc', ...claims })
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(key());
}

/**
 * Correctly signed tokens with one claim of the wrong shape, for an organization `org`: each must
 * be refused with UNAUTHENTICATED before any of its claims reaches the database.
 */
export async function malformedClaimTokens(org: string) {
  return {
    'an org that is not a UUID': await signed({ org: 'not-a-uuid-secret-ref' }),
    'an org that is a number': await signed({ org: 12345 }),
    'an org with a trailing newline': await signed({ org: `${org}\n` }),
    'admin role and an org': await signed({ role: 'admin', org }),
    'a role that is a number': await signed({ org, role: 7 }),
    'a role that is a list': await signed({ org, role: ['service'] }),
    'a role in capitals': await signed({ org, role: 'SERVICE' }),
    'a sub that is empty': await signed({ org, sub: '' }),
    'a sub that is a number': await signed({ org, sub: 42 }),
    'a sub over 200 characters': await signed({ org, sub: 's'.repeat(201) }),
    'a sub with a control character': await signed({ org, sub: 'svc\nrole=admin' }),
    'a sub with a bidirectional override': await signed({ org, sub: 'svc\u202e' }),
    'a scope naming an unknown scope': await signed({ org, scope: 'generation superuser' }),
    'a scope naming a scope twice': await signed({ org, scope: 'generation generation' }),
    'a scope that is a list': await signed({ org, scope: ['generation'] }),
    'a scope that is empty': await signed({ org, scope: '' }),
    'a scope with two spaces': await signed({ org, scope: 'generation  read' }),
  };
}

/** Tokens that must all be refused with UNAUTHENTICATED, for an organization `org`. */
export async function badTokens(org: string) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { role: 'admin', sub: 'mallory' };
  return {
    expired: await new SignJWT({ role: 'member', org })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('expired-member')
      .setIssuedAt(now - 7200)
      .setExpirationTime(now - 3600)
      .sign(key()),
    forged: await new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode('another-secret-that-is-long-enough-too')),
    algNone: `${base64url({ alg: 'none', typ: 'JWT' })}.${base64url({ ...claims, exp: now + 3600 })}.`,
    // Signed with the right key but another algorithm: the accepted algorithm is pinned to HS256.
    hs512: await new SignJWT(claims).setProtectedHeader({ alg: 'HS512' }).setExpirationTime('1h').sign(key()),
    unknownRole: await new SignJWT({ role: 'superuser', org })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('x')
      .setExpirationTime('1h')
      .sign(key()),
    memberWithoutOrg: await new SignJWT({ role: 'member' })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('x')
      .setExpirationTime('1h')
      .sign(key()),
    // A valid signature over a payload that was edited afterwards (role raised to admin).
    tampered: await (async () => {
      const genuine = await new SignJWT({ role: 'member', org })
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('m')
        .setExpirationTime('1h')
        .sign(key());
      const [header, , signature] = genuine.split('.');
      return `${header}.${base64url({ role: 'admin', sub: 'm', exp: now + 3600 })}.${signature}`;
    })(),
  };
}

export interface Snapshot {
  balances: Array<{ id: string; available: number; reserved: number; version: number }>;
  rows: Record<string, number>;
}

/**
 * Everything a request could have written: the balance (with its version) of each organization,
 * and the row count of every table the ledger writes.
 */
export async function snapshot(t: TestApp): Promise<Snapshot> {
  const balances = rowsOf<Record<string, unknown>>(
    await t.database.db.execute(sql`
      select o.id, coalesce(sum(l.available), 0)::bigint as available, coalesce(sum(l.reserved), 0)::bigint as reserved,
        o.balance_version as version
      from organizations o left join credit_lots l on l.organization_id = o.id
      group by o.id order by o.id`),
  ).map((row) => ({
    id: String(row.id),
    available: Number(row.available),
    reserved: Number(row.reserved),
    version: Number(row.version),
  }));
  const counts = rowsOf<Record<string, unknown>>(
    await t.database.db.execute(sql`
      select (select count(*) from organizations)::int as organizations,
        (select count(*) from credit_lots)::int as lots,
        (select count(*) from ledger_entries)::int as entries,
        (select count(*) from reservations)::int as reservations,
        (select count(*) from balance_alerts where removed_at is null)::int as alerts,
        (select count(*) from balance_alert_events)::int as alert_events,
        (select count(*) from organization_webhooks)::int as webhooks,
        (select count(*) from organization_webhooks where removed_at is null)::int as live_webhooks,
        (select count(distinct secret) from organization_webhooks)::int as webhook_secrets`),
  )[0]!;
  return { balances, rows: Object.fromEntries(Object.entries(counts).map(([name, value]) => [name, Number(value)])) };
}
