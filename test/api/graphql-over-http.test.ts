import { serverAudits } from 'graphql-http';
import { describe, expect } from 'vitest';
import { it, listenOverHttp, useTestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';

// graphql-http's audit of the GraphQL-over-HTTP specification, run against the real server over a
// socket: every MUST and every SHOULD passes, so a yoga upgrade or a plugin of ours that bends the
// protocol fails here. MAY items are the server's choice and are only required not to error.

describe.each(drivers)('GraphQL over HTTP audit (%s)', (driver) => {
  const block = useTestApp(driver);
  let url = '';
  it.beforeAll(async ({ testApps }) => {
    url = (await listenOverHttp(await testApps.open(block))).url;
  });

  // A body that is not JSON, and a POST with no body at all, are the client's mistake whatever it
  // accepts: 400 with a GraphQL error, never 200 (which an application/json client would read as
  // a GraphQL answer), and without the parser's message, which quotes the body back.
  const accepts = ['application/json', 'application/graphql-response+json', null];
  const bodies: Array<[string, string | undefined]> = [
    ['a body that is not JSON', '{"query": "{ plans { id } }"'],
    ['no body', undefined],
  ];
  for (const accept of accepts) {
    for (const [what, body] of bodies) {
      it(`answers 400 with a GraphQL error to ${what} (accept: ${accept ?? 'none'})`, async () => {
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (accept) headers.accept = accept;
        const response = await fetch(url, { method: 'POST', headers, body });
        expect(response.status).toBe(400);
        expect(response.headers.get('content-type')).toMatch(/^application\/(graphql-response\+)?json/);
        expect(await response.json()).toEqual({
          errors: [{ message: 'POST body sent invalid JSON.', extensions: { code: 'BAD_REQUEST' } }],
        });
      });
    }
  }

  for (const audit of serverAudits({ url: () => url })) {
    it(audit.name, async () => {
      const result = await audit.fn();
      const reason = result.status === 'ok' ? '' : `${result.reason} (HTTP ${result.response.status})`;
      if (audit.name.startsWith('MAY')) expect(result.status, reason).not.toBe('error');
      else expect(result.status, reason).toBe('ok');
    });
  }

  // Sent as real clients send them, with a bearer token (which a browser only adds after a CORS
  // preflight), the GET items hold too: queries run, URL-encoded variables are read, and a
  // mutation is refused. Without a header that proves the preflight, a GET is refused with 403.
  const GET_AUDITS = ['5A70', 'D6D5', '6A70', '9C48'];
  it('passes the GET audits when the requests carry a bearer token', async ({ t }) => {
    const authorization = `Bearer ${await t.token('admin')}`;
    const fetchFn = (input: RequestInfo | URL, init: RequestInit = {}) => {
      const headers = new Headers(init.headers);
      headers.set('authorization', authorization);
      return fetch(input, { ...init, headers });
    };
    const audits = serverAudits({ url: () => url, fetchFn }).filter((audit) => GET_AUDITS.includes(audit.id));
    expect(audits.map((audit) => audit.id).sort()).toEqual([...GET_AUDITS].sort());
    for (const audit of audits) {
      const result = await audit.fn();
      expect(result.status, `${audit.name}: ${result.status === 'ok' ? '' : result.reason}`).toBe('ok');
    }
  });
});
