import { CloseCode } from 'graphql-ws';

/** Why a WebSocket connection is refused: the close code and a reason a person can act on. */
export interface ConnectionRefusal {
  code: CloseCode.Unauthorized | CloseCode.Forbidden;
  reason: string;
}

/** What connection_init carried as the Authorization header value. */
export type ConnectionAuthorization =
  | { kind: 'header'; value: string }
  | { kind: 'none' }
  | { kind: 'unreadable'; reason: string };

// RFC 6455 (5.5) allows a control frame 125 bytes of payload, two of which hold the close code.
const CLOSE_REASON_BYTES_MAX = 123;

/** What to do about a token that was read but refused; it follows the verifier's own words. */
const GET_A_NEW_TOKEN = 'Reconnect with a new token.';

export const NO_TOKEN_REASON =
  'No token: send connectionParams { "Authorization": "Bearer <token>" } in connection_init.';

export const NOT_INITIALISED_REASON =
  'Send connection_init with the token and wait for connection_ack before subscribing.';

/**
 * The Authorization value of a connection_init payload, found where clients put it: at the top
 * level (as `authorization`, or `Authorization` pasted from the header `npm start` prints) or
 * under `headers` (as clients that reuse their HTTP headers send it), in any letter case. Two
 * different values are refused rather than one picked, so no reader of the payload can take a
 * different token from the one that was checked.
 */
export function authorizationOf(params: Readonly<Record<string, unknown>> | undefined): ConnectionAuthorization {
  const found = [...authorizationEntries(params), ...authorizationEntries(headersOf(params))];
  if (found.length === 0) return { kind: 'none' };
  if (found.some((value) => typeof value !== 'string')) {
    return { kind: 'unreadable', reason: 'Authorization must be "Bearer <token>", as text.' };
  }
  const values = new Set(found as string[]);
  if (values.size > 1) {
    return { kind: 'unreadable', reason: 'connectionParams carry two different Authorization values; send only one.' };
  }
  return { kind: 'header', value: found[0] as string };
}

/** The header value the connection's operations authenticate with (null when there is none). */
export function authorizationHeaderOf(params: Readonly<Record<string, unknown>> | undefined): string | null {
  const found = authorizationOf(params);
  return found.kind === 'header' ? found.value : null;
}

/** A 4401 refusal with `reason` as it stands (it says what to send instead). */
export function unauthorized(reason: string): ConnectionRefusal {
  return { code: CloseCode.Unauthorized, reason };
}

/** A 4401 refusal of a token: `message` says what was wrong with it, the reason adds what to do. */
export function refusedToken(message: string): ConnectionRefusal {
  return unauthorized(`${message} ${GET_A_NEW_TOKEN}`);
}

/**
 * `reason` cut to what a close frame can carry, on a character boundary, marked with "…" when
 * cut. ws throws on a longer reason, which would leave the socket open.
 */
export function closeReason(reason: string): string {
  if (Buffer.byteLength(reason, 'utf8') <= CLOSE_REASON_BYTES_MAX) return reason;
  const ellipsis = '…';
  let cut = '';
  for (const character of reason) {
    if (Buffer.byteLength(cut + character + ellipsis, 'utf8') > CLOSE_REASON_BYTES_MAX) break;
    cut += character;
  }
  return cut + ellipsis;
}

function headersOf(params: Readonly<Record<string, unknown>> | undefined): Record<string, unknown> | undefined {
  const headers = params?.headers;
  return headers && typeof headers === 'object' && !Array.isArray(headers)
    ? (headers as Record<string, unknown>)
    : undefined;
}

function authorizationEntries(params: Readonly<Record<string, unknown>> | undefined): unknown[] {
  if (!params) return [];
  return Object.entries(params)
    .filter(([key]) => key.toLowerCase() === 'authorization')
    .map(([, value]) => value);
}
