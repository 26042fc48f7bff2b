// Worker thread holding the live-balance subscribers: one graphql-ws client (one WebSocket) per
// subscriber, as each browser tab has its own. It runs apart from the load so that the arrival
// time of an event is not delayed by the load's own work on the main thread.
import { parentPort, workerData } from 'node:worker_threads';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { nowMs, sleep } from './stats.ts';

export interface SubscriberSpec {
  organizationId: string;
  token: string;
}

export interface SubscribersData {
  wsUrl: string;
  subscribers: SubscriberSpec[];
  connectConcurrency: number;
}

export type ToWorker =
  | { type: 'ping' }
  | { type: 'connect'; timeoutMs: number }
  | { type: 'record'; on: boolean }
  | { type: 'waitFor'; versions: Record<string, number>; timeoutMs: number }
  | { type: 'collect' }
  | { type: 'close' };

export type FromWorker =
  | { type: 'pong' }
  | { type: 'connected'; ms: number; connected: number }
  | { type: 'caughtUp'; ms: number; lagging: number }
  | {
      type: 'events';
      recorded: Array<{ organizationId: string; versions: number[]; times: number[]; lastVersion: number }>;
      /** Events received since the start, recorded or not. */
      received: number;
      /** Every subscription failure since the start. */
      failures: { count: number; samples: string[] };
    }
  | { type: 'closed' };

const QUERY = 'subscription ($id: ID!) { balanceChanged(organizationId: $id) { version available reserved } }';

interface Subscriber {
  spec: SubscriberSpec;
  client: Client | null;
  unsubscribe: (() => void) | null;
  lastVersion: number;
  versions: number[];
  times: number[];
  first: (() => void) | null;
}

const data = workerData as SubscribersData;
const port = parentPort!;
const subscribers: Subscriber[] = data.subscribers.map((spec) => ({
  spec,
  client: null,
  unsubscribe: null,
  lastVersion: -1,
  versions: [],
  times: [],
  first: null,
}));
let recording = false;
let closing = false;
let received = 0;
const failures = { count: 0, samples: [] as string[] };

function fail(detail: string): void {
  failures.count += 1;
  if (failures.samples.length < 5 && !failures.samples.includes(detail)) failures.samples.push(detail);
}

function describe(value: unknown): string {
  if (value && typeof value === 'object' && 'code' in value) {
    const event = value as { code: number; reason?: string };
    return `socket closed ${event.code}${event.reason ? ` ${event.reason}` : ''}`;
  }
  if (Array.isArray(value))
    return value.map((error) => (error as { message?: string }).message ?? String(error)).join('; ');
  return value instanceof Error ? value.message : JSON.stringify(value);
}

function open(subscriber: Subscriber): Promise<void> {
  return new Promise((resolve) => {
    subscriber.first = resolve;
    const client = createClient({
      url: data.wsUrl,
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${subscriber.spec.token}` },
      retryAttempts: 0,
      lazy: true,
    });
    subscriber.client = client;
    subscriber.unsubscribe = client.subscribe(
      { query: QUERY, variables: { id: subscriber.spec.organizationId } },
      {
        next: (value) => {
          const at = nowMs();
          const errors = (value as { errors?: unknown[] }).errors;
          const version = (value as { data?: { balanceChanged?: { version?: number } } }).data?.balanceChanged?.version;
          if (errors || typeof version !== 'number') {
            fail(`subscription event with ${errors ? `errors: ${describe(errors)}` : 'no version'}`);
          } else {
            received += 1;
            if (version < subscriber.lastVersion)
              fail(`version went back from ${subscriber.lastVersion} to ${version}`);
            subscriber.lastVersion = Math.max(subscriber.lastVersion, version);
            if (recording) {
              subscriber.versions.push(version);
              subscriber.times.push(at);
            }
          }
          subscriber.first?.();
          subscriber.first = null;
        },
        error: (error) => {
          if (!closing) fail(`subscription failed: ${describe(error)}`);
          subscriber.first?.();
          subscriber.first = null;
        },
        complete: () => {
          if (!closing) fail('subscription completed by the server');
          subscriber.first?.();
          subscriber.first = null;
        },
      },
    );
  });
}

async function connect(timeoutMs: number): Promise<void> {
  const started = nowMs();
  let next = 0;
  const worker = async () => {
    for (let index = next++; index < subscribers.length; index = next++) await open(subscribers[index]!);
  };
  const all = Promise.all(Array.from({ length: data.connectConcurrency }, worker));
  const timedOut = await Promise.race([all.then(() => false), sleep(timeoutMs).then(() => true)]);
  const connected = subscribers.filter((subscriber) => subscriber.lastVersion >= 0).length;
  if (timedOut)
    fail(`only ${connected} of ${subscribers.length} subscribers got their first balance within ${timeoutMs / 1000} s`);
  port.postMessage({ type: 'connected', ms: Math.round(nowMs() - started), connected } satisfies FromWorker);
}

async function waitFor(versions: Record<string, number>, timeoutMs: number): Promise<void> {
  const started = nowMs();
  const lagging = () =>
    subscribers.filter((subscriber) => subscriber.lastVersion < (versions[subscriber.spec.organizationId] ?? 0)).length;
  while (lagging() > 0 && nowMs() - started < timeoutMs) await sleep(20);
  port.postMessage({ type: 'caughtUp', ms: Math.round(nowMs() - started), lagging: lagging() } satisfies FromWorker);
}

port.on('message', (message: ToWorker) => {
  switch (message.type) {
    case 'ping':
      port.postMessage({ type: 'pong' } satisfies FromWorker);
      break;
    case 'connect':
      void connect(message.timeoutMs);
      break;
    case 'record':
      recording = message.on;
      if (message.on) {
        for (const subscriber of subscribers) {
          subscriber.versions = [];
          subscriber.times = [];
        }
      }
      break;
    case 'waitFor':
      void waitFor(message.versions, message.timeoutMs);
      break;
    case 'collect':
      port.postMessage({
        type: 'events',
        received,
        recorded: subscribers.map((subscriber) => ({
          organizationId: subscriber.spec.organizationId,
          versions: subscriber.versions,
          times: subscriber.times,
          lastVersion: subscriber.lastVersion,
        })),
        failures,
      } satisfies FromWorker);
      break;
    case 'close':
      closing = true;
      void Promise.all(
        subscribers.map(async (subscriber) => {
          subscriber.unsubscribe?.();
          await subscriber.client?.dispose();
        }),
      ).then(() => port.postMessage({ type: 'closed' } satisfies FromWorker));
      break;
  }
});
