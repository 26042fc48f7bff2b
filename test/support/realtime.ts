import { createClient, type Client } from 'graphql-ws';
import { vi } from 'vitest';
import WebSocket from 'ws';
import { BALANCE_FIELDS } from './operations.ts';

export const BALANCE_CHANGED = `subscription ($id: ID!) { balanceChanged(organizationId: $id) { ${BALANCE_FIELDS} } }`;

export interface SubscriptionEvent {
  data?: any;
  errors?: Array<{ message: string; extensions?: Record<string, any> }>;
}

/** What one subscription received, in order, and how it ended. */
export class Recording {
  readonly events: SubscriptionEvent[] = [];
  /** A `complete` was received. */
  completed = false;
  /** The SSE response body ended (with or without a `complete` event first). */
  streamEnded = false;
  /** An `error` message (graphql-ws), a close event, or a transport failure. */
  failure: unknown = null;

  get balances(): any[] {
    return this.events.filter((event) => event.data?.balanceChanged).map((event) => event.data.balanceChanged);
  }

  get versions(): number[] {
    return this.balances.map((balance) => balance.version);
  }

  get lastBalance(): any {
    return this.balances.at(-1);
  }

  /** Polls until `check` holds, failing with what was recorded after `timeoutMs`. */
  async waitFor(check: (recording: this) => boolean, timeoutMs = 10_000): Promise<void> {
    await vi.waitFor(
      () => {
        if (check(this)) return;
        throw new Error(
          `condition not met within ${timeoutMs} ms; recorded ${JSON.stringify(this.events)}, completed ${this.completed}, failure ${describe(this.failure)}`,
        );
      },
      { timeout: timeoutMs, interval: 20 },
    );
  }

  waitForVersion(version: number, timeoutMs?: number): Promise<void> {
    return this.waitFor((recording) => recording.versions.includes(version), timeoutMs);
  }

  waitForEnd(timeoutMs?: number): Promise<void> {
    return this.waitFor(
      (recording) => recording.completed || recording.streamEnded || recording.failure !== null,
      timeoutMs,
    );
  }
}

function describe(value: unknown): string {
  if (value && typeof value === 'object' && 'code' in value) return `close ${(value as { code: number }).code}`;
  return value instanceof Error ? value.message : JSON.stringify(value);
}

export interface WsConnection {
  client: Client;
  /** The close event of the socket, once closed (code 4401 for a rejected token). */
  closeCode(): number | null;
  /** The reason the server gave with its close frame, once closed. */
  closeReason(): string | null;
  subscribe(query: string, variables: Record<string, unknown>): { recording: Recording; unsubscribe: () => void };
  dispose(): Promise<void>;
}

/**
 * A graphql-ws client over `ws`, sending the token in connection_init as the browser would;
 * `connectionParams` replaces that payload whole (other shapes clients send).
 */
export function connectWs(
  baseUrl: string,
  token: string | null,
  options: { connectionParams?: Record<string, unknown> } = {},
): WsConnection {
  let closeCode: number | null = null;
  let closeReason: string | null = null;
  const client = createClient({
    url: `${baseUrl.replace(/^http/, 'ws')}/graphql`,
    webSocketImpl: WebSocket,
    connectionParams: options.connectionParams ?? (token === null ? {} : { authorization: `Bearer ${token}` }),
    retryAttempts: 0,
    lazy: true,
    on: {
      closed: (event) => {
        closeCode = (event as { code: number }).code;
        closeReason = String((event as { reason?: unknown }).reason ?? '');
      },
    },
  });
  return {
    client,
    closeCode: () => closeCode,
    closeReason: () => closeReason,
    subscribe(query, variables) {
      const recording = new Recording();
      const unsubscribe = client.subscribe(
        { query, variables },
        {
          next: (value) => void recording.events.push(value as SubscriptionEvent),
          error: (error) => {
            recording.failure = error;
          },
          complete: () => {
            recording.completed = true;
          },
        },
      );
      return { recording, unsubscribe };
    },
    dispose: () => Promise.resolve(client.dispose()),
  };
}

export interface SseSubscription {
  recording: Recording;
  status: Promise<number>;
  close(): void;
}

/**
 * A GraphQL-over-SSE subscription as curl or EventSource would open it: one POST with
 * `accept: text/event-stream`, read as it streams. Events are `next` (JSON data) and `complete`.
 */
export function subscribeSse(
  baseUrl: string,
  token: string | null,
  query: string,
  variables: Record<string, unknown>,
): SseSubscription {
  const recording = new Recording();
  const abort = new AbortController();
  const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'text/event-stream' };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = fetch(`${baseUrl}/graphql`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ query, variables }),
    signal: abort.signal,
  });
  void (async () => {
    try {
      const res = await response;
      const decoder = new TextDecoder();
      let buffer = '';
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let boundary: number;
        while ((boundary = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, boundary);
          buffer = buffer.slice(boundary + 2);
          let event = 'message';
          const data: string[] = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) event = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
          }
          if (event === 'next') recording.events.push(JSON.parse(data.join('\n')));
          else if (event === 'complete') recording.completed = true;
        }
      }
      recording.streamEnded = true;
    } catch (error) {
      if (!abort.signal.aborted) recording.failure = error;
    }
  })();
  return {
    recording,
    status: response.then((res) => res.status),
    close: () => abort.abort(),
  };
}
