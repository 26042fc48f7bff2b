import type { NotificationSource } from './notification-source.ts';

/** How many undelivered events one subscriber may hold; a consumer that falls further behind is ended. */
const PENDING_EVENTS_MAX = 100;

export interface AlertFeedOptions<T> {
  /** Delivers `<organizationId>:<eventId>` payloads, one per committed event. */
  source: NotificationSource;
  /** Reads one committed event as subscribers receive it; null when it does not exist. */
  load(organizationId: string, eventId: string): Promise<T | null>;
  /** How long starting to listen may take before it counts as failed. */
  listenTimeoutMs?: number;
  /** Told of every committed event heard, subscribers or not (the webhook dispatcher wakes on it). */
  onEvent?: (organizationId: string, eventId: string) => void;
  log?: (message: string, error?: unknown) => void;
}

export interface AlertFeedStats {
  /** Notifications of events for organizations that had subscribers. */
  notifications: number;
  subscribers: number;
}

export interface AlertFeed<T> {
  /** Starts listening. A failure is logged; it does not throw. */
  start(): Promise<void>;
  /** A new subscriber of the organization's events, from now on. */
  subscribe(organizationId: string): EventStream<T>;
  stats(): AlertFeedStats;
  /** Ends every subscription and closes the listener. */
  stop(): Promise<void>;
}

/**
 * Fans committed alert events out to this process's subscribers of their organization. A
 * notification is only delivered once its transaction committed, so the event row it names can
 * always be read; each event is read once however many subscribers its organization has. Unlike
 * balances, events are not states that a newer one replaces: every one is delivered, in the order
 * heard. Events committed while nobody listened (before a subscription, during a reconnect of the
 * listener) are not replayed here: the outbox keeps them.
 */
export function createAlertFeed<T>(options: AlertFeedOptions<T>): AlertFeed<T> {
  const log = options.log ?? (() => {});
  const subscribers = new Map<string, Set<EventStream<T>>>();
  const counters = { notifications: 0 };
  let stopped = false;

  function onNotification(payload: string): void {
    const separator = payload.indexOf(':');
    if (separator <= 0) return;
    const organizationId = payload.slice(0, separator);
    const eventId = payload.slice(separator + 1);
    options.onEvent?.(organizationId, eventId);
    const streams = subscribers.get(organizationId);
    if (!streams || streams.size === 0) return;
    counters.notifications += 1;
    // One read per event, handed to every subscriber registered when it was heard, in the order
    // heard (each stream keeps its own order by queueing the pending read).
    const event = options.load(organizationId, eventId);
    for (const stream of streams) stream.offer(event);
    event.catch((error: unknown) => log(`reading alert event ${eventId} failed`, error));
  }

  return {
    async start() {
      try {
        await withTimeout(
          options.source.start({ onNotification, onListen: () => {} }),
          options.listenTimeoutMs ?? 5000,
        );
      } catch (error) {
        log('listening for balance alerts failed', error);
      }
    },
    subscribe(organizationId) {
      let streams = subscribers.get(organizationId);
      if (!streams) {
        streams = new Set();
        subscribers.set(organizationId, streams);
      }
      const owner = streams;
      const stream = new EventStream<T>(() => {
        owner.delete(stream);
        if (owner.size === 0 && subscribers.get(organizationId) === owner) subscribers.delete(organizationId);
      });
      owner.add(stream);
      if (stopped) stream.end();
      return stream;
    },
    stats() {
      let count = 0;
      for (const streams of subscribers.values()) count += streams.size;
      return { notifications: counters.notifications, subscribers: count };
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      for (const streams of [...subscribers.values()]) for (const stream of [...streams]) stream.end();
      subscribers.clear();
      await options.source.close().catch((error: unknown) => log('closing the alert listener failed', error));
    },
  };
}

/**
 * One subscriber's events, in order. Each is offered as its pending read; one that turns out
 * missing (or unreadable) is skipped. Hand-written rather than a generator so that a subscriber
 * that leaves is released at once, not at the next event.
 */
export class EventStream<T> implements AsyncIterableIterator<T> {
  #pending: Array<Promise<T | null>> = [];
  #waiters: Array<(result: IteratorResult<T>) => void> = [];
  #done = false;
  #draining = false;
  readonly #ready: T[] = [];
  readonly #onEnd: () => void;

  constructor(onEnd: () => void = () => {}) {
    this.#onEnd = onEnd;
  }

  offer(event: Promise<T | null>): void {
    if (this.#done) return;
    if (this.#pending.length + this.#ready.length >= PENDING_EVENTS_MAX) {
      this.end();
      return;
    }
    this.#pending.push(event);
    void this.#drain();
  }

  async #drain(): Promise<void> {
    if (this.#draining) return;
    this.#draining = true;
    try {
      while (this.#pending.length > 0 && !this.#done) {
        const value = await this.#pending[0]!.catch(() => null);
        this.#pending.shift();
        if (value === null || this.#done) continue;
        const waiter = this.#waiters.shift();
        if (waiter) waiter({ value, done: false });
        else this.#ready.push(value);
      }
    } finally {
      this.#draining = false;
    }
  }

  end(): void {
    if (this.#done) return;
    this.#done = true;
    this.#pending = [];
    for (const waiter of this.#waiters.splice(0)) waiter({ value: undefined, done: true });
    this.#onEnd();
  }

  next(): Promise<IteratorResult<T>> {
    const ready = this.#ready.shift();
    if (ready !== undefined) return Promise.resolve({ value: ready, done: false });
    if (this.#done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  return(): Promise<IteratorResult<T>> {
    this.#ready.length = 0;
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}

function withTimeout(work: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}
