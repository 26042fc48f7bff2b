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
});
