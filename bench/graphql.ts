// GraphQL over HTTP for the load: keep-alive connections, one request at a time per connection,
// and one judge of what each answer means.
import http from 'node:http';

export const TYPENAME = '{ __typename }';

// What a generation backend asks for: the reservation it must capture and the balance it shows.
export const RESERVE = `mutation Reserve($input: ReserveCreditsInput!) {
  reserveCredits(input: $input) {
    __typename
    ... on ReserveCreditsSuccess { reservation { id amount expiresAt } balance { available reserved version } }
    ... on InsufficientCreditsError { required available }
    ... on Error { message }
  }
}`;

export const CAPTURE = `mutation Capture($id: ID!) {
  captureReservation(input: { reservationId: $id }) {
    __typename
    ... on CaptureReservationSuccess { reservation { id status capturedAmount } balance { available reserved version } }
    ... on ReservationStateError { status }
    ... on Error { message }
  }
}`;

export const REFUND = `mutation Refund($id: ID!) {
  refundReservation(input: { reservationId: $id }) {
    __typename
    ... on RefundReservationSuccess { reservation { id status refundedAmount } balance { available reserved version } }
    ... on ReservationStateError { status }
    ... on Error { message }
  }
}`;

export const CREATE_ORGANIZATION = `mutation Create($input: CreateOrganizationInput!) {
  createOrganization(input: $input) { __typename ... on CreateOrganizationSuccess { organization { id } } ... on Error { message } }
}`;

export const GRANT = `mutation Grant($input: GrantCreditsInput!) {
  grantCredits(input: $input) { __typename ... on GrantCreditsSuccess { lot { id granted } } ... on Error { message } }
}`;

/** What one generation costs: image-standard at HD_720P, 4 credits. */
export const GENERATION = { modelId: 'image-standard', resolution: 'HD_720P', count: 1 } as const;

export interface HttpAnswer {
  status: number;
  text: string;
  retryAfter: string | null;
}

/**
 * Times a request was sent again because the server closed an idle keep-alive connection just as
 * the request went out on it (ECONNRESET on a reused socket, the race Node's documentation
 * describes). Every request the bench sends may be repeated: reservations carry an idempotency
 * key and a second capture is refused. Reported with the results.
 */
export const transport = { retriedResets: 0 };

export class GraphQLHttp {
  private readonly agent: http.Agent;
  private readonly target: URL;

  constructor(
    readonly url: string,
    maxSockets: number,
    private readonly timeoutMs = 30_000,
  ) {
    // Idle connections are dropped after 1 s, well before the server's 5 s keep-alive timeout.
    this.agent = new http.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets, timeout: 1_000 });
    this.target = new URL(url);
  }

  async post(token: string, query: string, variables?: Record<string, unknown>): Promise<HttpAnswer> {
    const body = JSON.stringify(variables ? { query, variables } : { query });
    try {
      return await this.send(token, body);
    } catch (error) {
      if (!(error as { reusedSocket?: boolean }).reusedSocket || (error as NodeJS.ErrnoException).code !== 'ECONNRESET')
        throw error;
      transport.retriedResets += 1;
      return this.send(token, body);
    }
  }

  private send(token: string, body: string): Promise<HttpAnswer> {
    return new Promise((resolve, reject) => {
      const request = http.request(
        {
          agent: this.agent,
          hostname: this.target.hostname,
          port: this.target.port,
          path: this.target.pathname,
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            accept: 'application/graphql-response+json, application/json',
            'content-length': Buffer.byteLength(body),
            authorization: `Bearer ${token}`,
          },
        },
        (response) => {
          let text = '';
          response.setEncoding('utf8');
          response.on('data', (chunk: string) => (text += chunk));
          response.on('end', () => {
            const retryAfter = response.headers['retry-after'];
            resolve({
              status: response.statusCode ?? 0,
              text,
              retryAfter: typeof retryAfter === 'string' ? retryAfter : null,
            });
          });
          response.on('error', reject);
        },
      );
      request.setTimeout(this.timeoutMs, () =>
        request.destroy(new Error(`no answer within ${this.timeoutMs / 1000} s`)),
      );
      request.on('error', (error) => reject(Object.assign(error, { reusedSocket: request.reusedSocket })));
      request.end(body);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

export type Outcome = 'ok' | 'business' | 'rateLimited' | 'failed';

export interface Judged {
  outcome: Outcome;
  /** The mutation or query field's value, for ok and business answers. */
  value?: any;
  /** Why it failed, for the report. */
  detail?: string;
  /** For a rate-limited answer: how long the server asked to wait. */
  retryAfterMs?: number;
}

/**
 * Judges one answer. `ok`: the expected success type; `business`: one of the expected business
 * results (`businessTypes`); `rateLimited`: HTTP 429 with RATE_LIMITED; anything else (another
 * status, a GraphQL error, another result type, a body that is not JSON) has `failed`.
 */
export function judge(
  answer: HttpAnswer,
  field: string | null,
  okType: string | null,
  businessTypes: readonly string[] = [],
): Judged {
  let body: {
    data?: Record<string, any> | null;
    errors?: Array<{ message?: string; extensions?: { code?: string; retryAfterSeconds?: number } }>;
  };
  try {
    body = JSON.parse(answer.text);
  } catch {
    return { outcome: 'failed', detail: `HTTP ${answer.status}, body is not JSON: ${answer.text.slice(0, 120)}` };
  }
  const firstError = body.errors?.[0];
  if (answer.status === 429 && firstError?.extensions?.code === 'RATE_LIMITED') {
    const seconds = Number(answer.retryAfter ?? firstError.extensions.retryAfterSeconds ?? 1);
    return { outcome: 'rateLimited', retryAfterMs: (Number.isFinite(seconds) && seconds > 0 ? seconds : 1) * 1000 };
  }
  if (answer.status !== 200 || firstError) {
    const code = firstError?.extensions?.code ?? 'no code';
    return {
      outcome: 'failed',
      detail: `HTTP ${answer.status} ${code}: ${firstError?.message ?? answer.text.slice(0, 120)}`,
    };
  }
  if (field === null) return body.data ? { outcome: 'ok', value: body.data } : { outcome: 'failed', detail: 'no data' };
  const value = body.data?.[field];
  const type = value?.__typename;
  if (type === okType) return { outcome: 'ok', value };
  if (typeof type === 'string' && businessTypes.includes(type)) return { outcome: 'business', value };
  return {
    outcome: 'failed',
    detail: `unexpected ${field} result ${type ?? 'none'}: ${value?.message ?? JSON.stringify(value)?.slice(0, 120)}`,
  };
}

export function describeError(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code ? `${code}: ${error.message}` : error.message;
  }
  return String(error);
}

/** A request made once, for set-up: anything but the success type throws. */
export async function mustSucceed(
  client: GraphQLHttp,
  token: string,
  query: string,
  variables: Record<string, unknown>,
  field: string,
  okType: string,
) {
  const verdict = judge(await client.post(token, query, variables), field, okType);
  if (verdict.outcome !== 'ok') throw new Error(`set-up ${field} failed: ${verdict.detail ?? verdict.outcome}`);
  return verdict.value;
}
