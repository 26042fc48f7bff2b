import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Webhook } from 'standardwebhooks';
import { expect } from 'vitest';
import type { TestApp } from './app.ts';
import { ERROR_FIELDS } from './operations.ts';
import { expectSuccess, type TestOrganization } from './scenario.ts';

export const SET_WEBHOOK = `
  mutation ($input: SetOrganizationWebhookInput!) {
    setOrganizationWebhook(input: $input) {
      ${ERROR_FIELDS}
      ... on SetOrganizationWebhookSuccess { secret webhook { id url createdAt secretRotatedAt previousSecretExpiresAt } }
    }
  }`;

export const ROTATE_SECRET = `
  mutation ($input: OrganizationWebhookInput!) {
    rotateWebhookSecret(input: $input) {
      ${ERROR_FIELDS}
      ... on RotateWebhookSecretSuccess { secret webhook { id url secretRotatedAt previousSecretExpiresAt } }
    }
  }`;

export const REMOVE_WEBHOOK = `
  mutation ($input: OrganizationWebhookInput!) {
    removeOrganizationWebhook(input: $input) { ${ERROR_FIELDS} ... on RemoveOrganizationWebhookSuccess { webhook { id } } }
  }`;

export const DELIVERIES = `
  query ($id: ID!, $first: Int, $after: String) {
    webhookDeliveries(organizationId: $id, first: $first, after: $after) {
      edges { cursor node { eventId status attempts lastAttemptAt lastHttpStatus lastError nextAttemptAt deliveredAt createdAt } }
      pageInfo { hasNextPage endCursor }
    }
  }`;

/** Points the organization's webhook at `url` as an admin; answers the webhook and its secret. */
export async function setWebhook(t: TestApp, org: TestOrganization, url: string) {
  const result = await t.gql(SET_WEBHOOK, { input: { organizationId: org.id, url } }, await t.token('admin'));
  expect(result.errors).toBeUndefined();
  return expectSuccess(result.data.setOrganizationWebhook, 'SetOrganizationWebhookSuccess') as {
    secret: string;
    webhook: { id: string; url: string };
  };
}

/** The organization's deliveries, newest first, as an admin reads them. */
export async function deliveriesOf(t: TestApp, org: TestOrganization) {
  const result = await t.gql(DELIVERIES, { id: org.id, first: 100 }, await t.token('admin'));
  expect(result.errors).toBeUndefined();
  return result.data.webhookDeliveries.edges.map((edge: { node: Record<string, unknown> }) => edge.node) as Array<{
    eventId: string;
    status: string;
    attempts: number;
    lastAttemptAt: string | null;
    lastHttpStatus: number | null;
    lastError: string | null;
    nextAttemptAt: string | null;
    deliveredAt: string | null;
  }>;
}

/** One request a receiver got, and whether its signature verified with the receiver's secrets. */
export interface ReceivedWebhook {
  headers: IncomingHttpHeaders;
  body: string;
  /** The secrets (of those the receiver knows) whose verification passed. */
  verifiedWith: string[];
  payload: any;
}

export type ReceiverMode = 'ok' | 'fail' | 'hang';

/**
 * A local webhook receiver that verifies every request as the README tells receivers to: with
 * the `standardwebhooks` package's `Webhook.verify`, over the raw body and the three headers.
 */
export class WebhookReceiver {
  readonly received: ReceivedWebhook[] = [];
  mode: ReceiverMode = 'ok';
  secrets: string[] = [];
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  readonly #hanging = new Set<ServerResponse>();
  readonly #waiters: Array<() => void> = [];

  private constructor() {
    this.#server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const headers = request.headers;
        const verifiedWith = this.secrets.filter((secret) => {
          try {
            new Webhook(secret).verify(body, headers as Record<string, string>);
            return true;
          } catch {
            return false;
          }
        });
        this.received.push({ headers, body, verifiedWith, payload: JSON.parse(body) });
        for (const wake of this.#waiters.splice(0)) wake();
        if (this.mode === 'hang') {
          this.#hanging.add(response);
          return;
        }
        response.writeHead(this.mode === 'ok' ? 204 : 500).end();
      });
    });
    this.#server.on('connection', (socket) => {
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
    });
  }

  static async start(port = 0): Promise<WebhookReceiver> {
    const receiver = new WebhookReceiver();
    await new Promise<void>((resolve) => receiver.#server.listen(port, '127.0.0.1', resolve));
    return receiver;
  }

  get port(): number {
    return (this.#server.address() as AddressInfo).port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/hooks/credits`;
  }

  /** The requests about one organization's events, in the order they arrived. */
  receivedFor(organizationId: string): ReceivedWebhook[] {
    return this.received.filter((message) => message.payload?.data?.organizationId === organizationId);
  }

  /** Resolves once `count` requests about the organization's events have arrived (or rejects after `timeoutMs`). */
  async waitForOrganization(organizationId: string, count: number, timeoutMs = 20_000): Promise<ReceivedWebhook[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.receivedFor(organizationId).length < count) {
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(`the receiver got ${this.receivedFor(organizationId).length} of ${count} requests`);
      await this.#nextRequest(left);
    }
    return this.receivedFor(organizationId);
  }

  /** Resolves once `count` requests have arrived (or rejects after `timeoutMs`). */
  async waitFor(count: number, timeoutMs = 20_000): Promise<ReceivedWebhook[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.received.length < count) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`the receiver got ${this.received.length} of ${count} requests`);
      await this.#nextRequest(left);
    }
    return this.received;
  }

  #nextRequest(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.#waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  async close(): Promise<void> {
    for (const response of this.#hanging) response.destroy();
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/** A port nothing listens on (a receiver that is down): one that was just free. */
export async function closedPort(): Promise<number> {
  const receiver = await WebhookReceiver.start();
  const port = receiver.port;
  await receiver.close();
  return port;
}
