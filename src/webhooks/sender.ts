import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import { Webhook } from 'standardwebhooks';
import { isPublicAddress, privateHostProblem, type WebhookUrlPolicy } from './url-policy.ts';

/** One signed POST of an event to a receiver. */
export interface WebhookMessage {
  url: string;
  /** The event id: the same on every attempt, so a receiver can deduplicate by it. */
  id: string;
  body: string;
  /** The secrets to sign with (the current one, and during a rotation the previous one). */
  secrets: readonly string[];
}

/** How one attempt ended; `delivered` is any 2xx answer. */
export type AttemptOutcome =
  | { kind: 'delivered'; status: number }
  | { kind: 'rejected'; status: number; error: string }
  | { kind: 'timeout'; error: string }
  | { kind: 'unreachable'; error: string }
  | { kind: 'forbidden_address'; error: string };

export interface SendOptions {
  policy: WebhookUrlPolicy;
  /** The whole attempt: connecting, sending and the answer's status line. */
  timeoutMs: number;
  /** Name resolution; dns.lookup unless a test stands in for the resolver. */
  lookup?: LookupFunction;
  /** Ends the attempt early (the process is stopping). */
  signal?: AbortSignal;
}

const USER_AGENT = 'credit-service-webhooks/1';

/**
 * The Standard Webhooks headers: `webhook-signature` holds one `v1,<base64 HMAC-SHA256>` over
 * `id.timestamp.body` per secret, separated by spaces, so a receiver that still has the previous
 * secret during a rotation verifies as well as one that has the new. The timestamp is wall-clock
 * time, whatever clock the ledger runs on: receivers compare it with theirs to refuse replays.
 */
export function signedHeaders(message: WebhookMessage, at: Date = new Date()): Record<string, string> {
  const signatures = message.secrets.map((secret) => new Webhook(secret).sign(message.id, at, message.body));
  return {
    'content-type': 'application/json',
    'user-agent': USER_AGENT,
    'webhook-id': message.id,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': signatures.join(' '),
  };
}

/**
 * POSTs one message and says how it went; never throws. Redirects are not followed (a 3xx is a
 * rejection): a redirect could point anywhere, past the address checks. Outside the permissive
 * policy, every address a name resolves to must be public, and the connection is made to the
 * address that was checked, so a name cannot resolve to a public address for the check and a
 * private one for the connection.
 */
export function sendWebhook(message: WebhookMessage, options: SendOptions): Promise<AttemptOutcome> {
  let url: URL;
  try {
    url = new URL(message.url);
  } catch {
    return Promise.resolve({ kind: 'unreachable', error: 'the webhook URL does not parse' });
  }
  if (!options.policy.allowPrivateAddresses) {
    const problem = privateHostProblem(url.hostname);
    if (problem) return Promise.resolve({ kind: 'forbidden_address', error: problem });
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && options.policy.allowHttp)) {
    return Promise.resolve({ kind: 'forbidden_address', error: `${url.protocol} is not allowed` });
  }
  const lookup = options.policy.allowPrivateAddresses
    ? options.lookup
    : publicOnlyLookup(options.lookup ?? (dnsLookup as LookupFunction));
  const body = Buffer.from(message.body);
  const headers = { ...signedHeaders(message), 'content-length': String(body.length) };
  return new Promise<AttemptOutcome>((resolve) => {
    let settled = false;
    const finish = (outcome: AttemptOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      resolve(outcome);
    };
    const transport = url.protocol === 'https:' ? https : http;
    const request = transport.request(url, { method: 'POST', headers, ...(lookup ? { lookup } : {}) });
    const timer = setTimeout(() => {
      finish({ kind: 'timeout', error: `no answer within ${options.timeoutMs} ms` });
      request.destroy();
    }, options.timeoutMs);
    const onAbort = () => {
      finish({ kind: 'unreachable', error: 'the attempt was interrupted (the process is stopping)' });
      request.destroy();
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    request.on('response', (response) => {
      const status = response.statusCode ?? 0;
      // The answer's body means nothing to us; drain a little of it, then let the socket go.
      response.resume();
      response.on('error', () => {});
      setTimeout(() => response.destroy(), 1000).unref();
      if (status >= 200 && status < 300) finish({ kind: 'delivered', status });
      else finish({ kind: 'rejected', status, error: `the receiver answered ${status}` });
    });
    request.on('error', (error: NodeJS.ErrnoException) => {
      if (error instanceof ForbiddenAddressError) finish({ kind: 'forbidden_address', error: error.message });
      else finish({ kind: 'unreachable', error: describeNetworkError(error) });
    });
    request.end(body);
  });
}

export class ForbiddenAddressError extends Error {
  override name = 'ForbiddenAddressError';
}

/** A resolver that fails unless every address the name resolves to is public. */
export function publicOnlyLookup(resolve: LookupFunction): LookupFunction {
  return (hostname, options: LookupOptions, callback) => {
    resolve(hostname, { ...options, all: true }, (error, resolved) => {
      if (error) {
        callback(error, '', 0);
        return;
      }
      const addresses = (Array.isArray(resolved) ? resolved : [{ address: resolved, family: 4 }]) as LookupAddress[];
      const refused = addresses.find((entry) => !isPublicAddress(entry.address));
      if (refused || addresses.length === 0) {
        const what = refused ? `a non-public address (${refused.address})` : 'no address';
        callback(new ForbiddenAddressError(`${hostname} resolves to ${what}`), '', 0);
        return;
      }
      if (options.all) callback(null, addresses);
      else callback(null, addresses[0]!.address, addresses[0]!.family);
    });
  };
}

/** A network failure in words for operators, without anything the receiver sent. */
function describeNetworkError(error: NodeJS.ErrnoException): string {
  const code = error.code ? `${error.code}: ` : '';
  return `${code}${error.message}`.slice(0, 300);
}
