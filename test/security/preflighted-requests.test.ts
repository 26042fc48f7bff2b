// GET queries as real clients send them (a cached or persisted query with its bearer token, no
// body and so no Content-Type), over a listening server and in process. A request with an
// Authorization header cannot leave a browser cross-site without a CORS preflight, so it counts
// as preflighted; forms and header-less GETs, which any page can send, are still refused, and a
// mutation over GET is 405 as the GraphQL-over-HTTP specification asks.
import { sql } from 'drizzle-orm';
import { describe, expect } from 'vitest';
import { rowsOf } from '../../src/db/client.ts';
import type { TestApp } from '../support/app.ts';
import { it, listenOverHttp, useTestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { BALANCE } from '../support/operations.ts';
import { newOrganization } from '../support/scenario.ts';
import { send } from './http.ts';

const TYPENAME = '{ __typename }';
const MUTATION = 'mutation { createOrganization(input: { name: "x", planId: "free" }) { __typename } }';

async function organizationsNamedX(t: TestApp): Promise<number> {
  const rows = rowsOf<{ count: number }>(
    await t.database.db.execute(sql`select count(*)::int as count from organizations where name = 'x'`),
  );
  return rows[0]!.count;
}

function search(query: string, variables?: Record<string, unknown>): string {
  const params = new URLSearchParams({ query });
  if (variables) params.set('variables', JSON.stringify(variables));
  return `?${params}`;
}

describe.each(drivers)('requests a browser preflights, and those it does not (%s)', (driver) => {
  const block = useTestApp(driver);
  let url = '';
  it.beforeAll(async ({ testApps }) => {
    url = (await listenOverHttp(await testApps.open(block))).url;
  });

  it('answers a GET query with a bearer token and no Content-Type, over a real socket', async ({ t }) => {
    const org = await newOrganization(t);
    const response = await fetch(`${url}${search(BALANCE, { id: org.id })}`, {
      headers: { authorization: `Bearer ${org.member}`, accept: 'application/graphql-response+json' },
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { data?: any; errors?: unknown };
    expect(body.errors).toBeUndefined();
    expect(body.data.balance.organizationId).toBe(org.id);
  });

  it('counts an Authorization header of any case and any value as preflight evidence, in process', async ({ t }) => {
    // A wrong token still proves the preflight; it is then refused as unauthenticated, not as CSRF.
    for (const authorization of ['Bearer not-a-token', 'Basic dXNlcjpwYXNz']) {
      const response = await send(t, {
        method: 'GET',
        body: undefined,
        search: search(TYPENAME),
        headers: { 'content-type': '', Authorization: authorization },
      });
      expect(response.status, response.text).toBe(200);
      expect(response.body).toEqual({ data: { __typename: 'Query' } });
    }
  });

  it('answers a GET mutation 405 with Allow: POST, with or without a token', async ({ t }) => {
    const org = await newOrganization(t);
    const admin = await t.token('admin');
    const callers: Array<Record<string, string>> = [
      { authorization: `Bearer ${admin}` },
      { authorization: `Bearer ${org.member}` },
      { 'x-graphql-yoga-csrf': '1' },
    ];
    for (const headers of callers) {
      const response = await fetch(`${url}${search(MUTATION)}`, {
        headers: { ...headers, accept: 'application/graphql-response+json' },
      });
      expect(response.status).toBe(405);
      expect(response.headers.get('allow')).toBe('POST');
      const body = (await response.json()) as { errors: Array<{ message: string }> };
      expect(body.errors[0]?.message).toBe('Can only perform a mutation operation from a POST request.');
    }
    // None of them ran.
    expect(await organizationsNamedX(t)).toBe(0);
  });

  it('still refuses a header-less GET, and forms and text bodies without a token or the CSRF header', async ({ t }) => {
    const org = await newOrganization(t);
    const get = await fetch(`${url}${search(TYPENAME)}`);
    expect(get.status).toBe(403);
    const getMutation = await fetch(`${url}${search(MUTATION)}`);
    expect(getMutation.status).toBe(403);
    const form = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ query: BALANCE, variables: JSON.stringify({ id: org.id }) }).toString(),
    });
    expect(form.status).toBe(403);
    for (const contentType of ['text/plain', 'multipart/form-data; boundary=x']) {
      const response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': contentType },
        body: JSON.stringify({ query: TYPENAME }),
      });
      expect(response.status, contentType).toBe(403);
    }
  });

  it('answers a form post that carries a bearer token, which no page can send cross-site', async ({ t }) => {
    const org = await newOrganization(t);
    const response = await fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Bearer ${org.member}`,
        accept: 'application/graphql-response+json',
      },
      body: new URLSearchParams({ query: BALANCE, variables: JSON.stringify({ id: org.id }) }).toString(),
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { data?: any };
    expect(body.data.balance.organizationId).toBe(org.id);
  });
});
