// TEST-ONLY fault switch for the crash test; never part of `npm start`.
//
// The crash test's server start script preloads this module (`node --import tsx --import
// <this file> src/main.ts`) only when CREDITS_TEST_FAULT_500_RATE is set to a number above 0.
// It then stands in for a broken build: a fraction `rate` of the POST requests the server
// receives (every 1/rate-th one, so the first few always pass) is answered with HTTP 500 and a
// masked GraphQL error before the app sees it, the way a server failing under load would answer.
// The crash test's outcome checker must report every such answer.
import http from 'node:http';

const rate = Number(process.env.CREDITS_TEST_FAULT_500_RATE ?? '0');

if (Number.isFinite(rate) && rate > 0) {
  const emit = http.Server.prototype.emit;
  let posts = 0;
  let faults = 0;
  http.Server.prototype.emit = function faultyEmit(
    this: http.Server,
    event: string | symbol,
    ...args: unknown[]
  ): boolean {
    if (event === 'request') {
      const [request, response] = args as [http.IncomingMessage, http.ServerResponse];
      if (request.method === 'POST') {
        posts += 1;
        if (Math.floor(posts * rate) > faults) {
          faults += 1;
          // Said before the answer is sent: a SIGKILL between the two then leaves a line without an
          // answer (which the checker allows), never an answer the line count misses.
          console.error('TEST FAULT: answered 500');
          request.resume();
          response.writeHead(500, { 'content-type': 'application/graphql-response+json; charset=utf-8' });
          response.end(
            JSON.stringify({
              errors: [{ message: 'Unexpected error.', extensions: { code: 'INTERNAL_SERVER_ERROR' } }],
            }),
          );
          return true;
        }
      }
    }
    return (emit as (this: http.Server, event: string | symbol, ...args: unknown[]) => boolean).call(
      this,
      event,
      ...args,
    );
  } as typeof emit;
  console.error(`TEST FAULT SWITCH ON: answering 500 to ${rate} of POST requests`);
}
