import { useContentEncoding } from '@whatwg-node/server';
import type { CORSOptions, Plugin } from 'graphql-yoga';
import type { GraphQLContext } from '../context.ts';

/**
 * The header graphql-yoga's CSRF prevention asks of requests a page could send cross-site
 * without a preflight (forms, text bodies, GETs). Any value will do: a page can only add it after
 * a CORS preflight, which the allow-list answers.
 */
export const CSRF_HEADER = 'x-graphql-yoga-csrf';

// Compressing a few hundred bytes costs more than it saves; the responses worth it are ledger
// pages, introspection and the GraphiQL page.
const COMPRESSION_THRESHOLD_BYTES = 1024;

/**
 * gzip or deflate (as the client accepts) for responses of known length from 1 KB up, through
 * @whatwg-node/server's content encoding. Event streams are never compressed (compression would
 * hold events back until a block fills), nor are compressed request bodies accepted (a small
 * body could inflate far beyond the body limit).
 */
export function useLargeResponseCompression(): Plugin<GraphQLContext> {
  const encoding = useContentEncoding<Record<string, unknown>>();
  return {
    onResponse(payload) {
      const length = Number(payload.response.headers.get('content-length') ?? NaN);
      if (!(length >= COMPRESSION_THRESHOLD_BYTES)) return undefined;
      if (payload.response.headers.get('content-encoding')) return undefined;
      if ((payload.response.headers.get('content-type') ?? '').startsWith('text/event-stream')) return undefined;
      return encoding.onResponse?.(payload as Parameters<NonNullable<typeof encoding.onResponse>>[0]);
    },
  };
}

/**
 * CORS for the allowed origins: each is answered with itself, never with `*` echoed for
 * credentials and never for the `null` origin (sandboxed frames and local files). No cookies
 * are used (tokens travel in the Authorization header), so credentials are never allowed.
 * `'*'` allows any origin; it is the development default. Other origins get no CORS headers,
 * so browsers keep their pages from reading the answers.
 */
export function corsPolicy(allowed: readonly string[] | '*'): (request: Request) => CORSOptions {
  return (request) => {
    const origin = request.headers.get('origin');
    if (!origin || origin === 'null') return false;
    if (allowed !== '*' && !allowed.includes(origin)) return false;
    return {
      origin: [origin],
      credentials: false,
      methods: ['GET', 'POST'],
      allowedHeaders: ['authorization', 'content-type', 'accept', CSRF_HEADER],
      exposedHeaders: ['retry-after'],
      maxAge: 600,
    };
  };
}
