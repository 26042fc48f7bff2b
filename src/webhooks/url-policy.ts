import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import { InvalidInputError } from '../ledger/errors.ts';

/** Which webhook addresses this deployment accepts; production accepts neither relaxation. */
export interface WebhookUrlPolicy {
  /** Plain http besides https (development, or an operator who asks for it). */
  allowHttp: boolean;
  /** Loopback, private, link-local and other non-public addresses (development and tests). */
  allowPrivateAddresses: boolean;
}

export const PRODUCTION_WEBHOOK_POLICY: WebhookUrlPolicy = { allowHttp: false, allowPrivateAddresses: false };
export const DEVELOPMENT_WEBHOOK_POLICY: WebhookUrlPolicy = { allowHttp: true, allowPrivateAddresses: true };

export const WEBHOOK_URL_LENGTH_MAX = 2048;

/**
 * Whether an address is an ordinary public unicast one. Everything else is refused: loopback,
 * private (RFC 1918, unique-local), link-local (where cloud metadata services answer), carrier-grade
 * NAT, unspecified, multicast, broadcast, reserved, and the IPv6 forms that embed an IPv4 address
 * (IPv4-mapped addresses are judged as the IPv4 address they map; 6to4, Teredo and NAT64 are
 * refused outright, since they could reach anything).
 */
export function isPublicAddress(address: string): boolean {
  if (!ipaddr.isValid(address)) return false;
  return ipaddr.process(address).range() === 'unicast';
}

/**
 * Checks a webhook URL as given by an operator and answers it normalised (the WHATWG parser turns
 * `https://2130706433/` into `https://127.0.0.1/`, so the checks see what a connection would).
 * Names are only resolved at delivery, where every resolved address is checked again.
 */
export function checkWebhookUrl(raw: string, policy: WebhookUrlPolicy): URL {
  if (raw.length > WEBHOOK_URL_LENGTH_MAX) {
    throw refused(`url may be at most ${WEBHOOK_URL_LENGTH_MAX} characters.`);
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw refused('url is not an absolute URL.');
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && policy.allowHttp)) {
    throw refused(policy.allowHttp ? 'url must use https or http.' : 'url must use https.');
  }
  if (url.username !== '' || url.password !== '') {
    throw refused('url may not carry a user name or password; authenticate the request by its signature.');
  }
  if (url.href.length > WEBHOOK_URL_LENGTH_MAX) {
    throw refused(`url may be at most ${WEBHOOK_URL_LENGTH_MAX} characters.`);
  }
  if (!policy.allowPrivateAddresses) {
    const problem = privateHostProblem(url.hostname);
    if (problem) throw refused(problem);
  }
  return url;
}

/** Why a URL's host may not be called from production, or null when it may (so far as can be told before resolving). */
export function privateHostProblem(hostname: string): string | null {
  const host = hostname.startsWith('[') ? hostname.slice(1, -1) : hostname;
  if (isIP(host) !== 0) {
    return isPublicAddress(host) ? null : `url names a non-public address (${host}).`;
  }
  const name = host.toLowerCase().replace(/\.$/, '');
  if (name === 'localhost' || name.endsWith('.localhost')) return 'url names this machine (localhost).';
  // A single-label name only resolves inside a private network (a search domain, a container's peers).
  if (!name.includes('.')) return `url must name a public host, not ${JSON.stringify(name)}.`;
  return null;
}

function refused(message: string): InvalidInputError {
  return new InvalidInputError(message, 'url');
}
