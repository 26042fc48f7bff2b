// One way to send a GraphQL operation over HTTP in tests, wherever the server is: in process
// (`yoga.fetch`), on a port of this process, or in a server process of its own.

export interface GraphQLResponse<T = any> {
  status: number;
  data: T;
  errors?: Array<{ message: string; extensions?: Record<string, any>; path?: Array<string | number> }>;
}

export interface GraphQLRequestOptions {
  /** Sent as `authorization: Bearer <token>` when given. */
  token?: string | null;
  /** Further request headers (x-request-id, origin, …). */
  headers?: Record<string, string>;
  /** Gives up on the request (and its body) after this long; no limit when absent. */
  timeoutMs?: number;
}

/** The POST a GraphQL client sends: a JSON body with the operation and its variables. */
export function graphqlRequest(
  query: string,
  variables?: Record<string, unknown>,
  options: GraphQLRequestOptions = {},
): RequestInit {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...options.headers };
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  return {
    method: 'POST',
    headers,
    body: JSON.stringify({ query, variables }),
    signal: options.timeoutMs === undefined ? undefined : AbortSignal.timeout(options.timeoutMs),
  };
}

/** Reads a GraphQL answer; a body that is not JSON throws with the status and the start of the body. */
export async function readGraphQLResponse<T = any>(response: Response): Promise<GraphQLResponse<T>> {
  const text = await response.text();
  let body: { data: T; errors?: GraphQLResponse['errors'] };
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`HTTP ${response.status} with a body that is not JSON: ${text.slice(0, 300)}`);
  }
  return { status: response.status, data: body.data, errors: body.errors };
}

/** Sends one operation to the GraphQL endpoint at `url` and returns its status, data and errors. */
export async function gql<T = any>(
  url: string,
  query: string,
  variables?: Record<string, unknown>,
  options?: GraphQLRequestOptions,
): Promise<GraphQLResponse<T>> {
  return readGraphQLResponse<T>(await fetch(url, graphqlRequest(query, variables, options)));
}

/**
 * Sends a set-up operation that must succeed: anything but HTTP 200 with data and no errors fails
 * the test at once, so a later assertion never runs on a half-made world. Returns the data.
 */
export async function gqlData<T = any>(
  url: string,
  query: string,
  variables: Record<string, unknown>,
  options?: GraphQLRequestOptions,
): Promise<T> {
  const response = await fetch(url, graphqlRequest(query, variables, options));
  const text = await response.text();
  if (response.status !== 200) throw new Error(`HTTP ${response.status}: ${text}`);
  const body = JSON.parse(text) as { data?: T; errors?: unknown[] };
  if (body.errors) throw new Error(`GraphQL errors: ${JSON.stringify(body.errors)}`);
  return body.data as T;
}
