import { randomUUID } from 'node:crypto';
import type { NotificationSource } from './notification-source.ts';
import { VersionedStream, type Versioned } from './versioned-stream.ts';

/** How long to wait before reading a topic again after a read failed. */
const READ_RETRY_MS = 1000;

export interface BalanceNotifierOptions<T extends Versioned> {
  /** Delivers `<topic>:<version>` payloads, one per committed change. */
  source: NotificationSource;
  /** Reads a topic's current state; null when the topic does not exist. */
  load(topic: string): Promise<T | null>;
  /** How long to collect a burst of notifications before the one read that answers them all. */
  coalesceMs?: number;
  /** How often to check that the listener still hears the channel; null for never. */
  watchdogIntervalMs?: number | null;
  /** How long starting to listen may take before it counts as failed (and the watchdog retries). */
  listenTimeoutMs?: number;
  log?: (message: string, error?: unknown) => void;
}

export interface NotifierStats {
  /** Notifications for topics that had subscribers. */
  notifications: number;
  /** State reads made to answer them (and resyncs); shared by all subscribers of a topic. */
  loads: number;
  /** Times listening (re)started; every start after the first resyncs all subscribers. */
  listens: number;
  /** Times the watchdog replaced a listener that stopped hearing the channel. */
  restarts: number;
  /** Watchdog pings that came back: the listener was hearing the channel. */
  pingsAnswered: number;
  topics: number;
  subscribers: number;
}

export interface BalanceNotifier<T extends Versioned> {
  /** Starts listening. A failure is logged and left to the watchdog; it does not throw. */
  start(): Promise<void>;
  /**
   * A new subscriber of `topic`, registered at once. The caller offers it a first state of its
   * own reading; from then on it receives every newer state this process reads for the topic.
   */
  subscribe(topic: string): VersionedStream<T>;
  stats(): NotifierStats;
  /** Ends every subscription and closes the listener. */
  stop(): Promise<void>;
}

interface Topic<T extends Versioned> {
  subscribers: Set<VersionedStream<T>>;
  /** The highest version read so far; notifications up to it need no read. */
  loadedVersion: number;
  /** The highest version announced so far. */
  announcedVersion: number;
  /** Every subscriber must be sent the current state again, even if unchanged. */
  resync: boolean;
  timer: NodeJS.Timeout | null;
  loading: boolean;
}

const PING_PREFIX = 'ping:';

/**
 * Fans committed changes out to subscribers, per topic (an organization id), across processes.
 *
 * A notification carries only a topic and its new version. A topic's first notification starts
 * a short window; when it closes, one read answers every notification that arrived meanwhile and
 * goes to all of the topic's subscribers. Notifications arriving during that read are answered by
 * at most one more read, and those whose version the read already covered by none, because a
 * notification is only delivered after its transaction committed, so any read that starts later
 * sees it. Each subscriber's stream drops states older than one it already has, so versions only
 * grow, and whenever listening restarts (a reconnect, or the watchdog) every subscriber is sent
 * the current state again, so changes made while nobody listened still reach the screen.
 */
export function createBalanceNotifier<T extends Versioned>(options: BalanceNotifierOptions<T>): BalanceNotifier<T> {
  const coalesceMs = options.coalesceMs ?? 10;
  const listenTimeoutMs = options.listenTimeoutMs ?? 5000;
  const log = options.log ?? (() => {});
  const topics = new Map<string, Topic<T>>();
  const counters = { notifications: 0, loads: 0, listens: 0, restarts: 0, pingsAnswered: 0 };
  let stopped = false;

  // The watchdog's pings go out over an ordinary connection and must come back on the listener.
  const pingNonce = randomUUID();
  let pingSequence = 0;
  let awaitedPing: string | null = null;
  let restarting = false;
  let watchdog: NodeJS.Timeout | null = null;

  function onNotification(payload: string): void {
    if (payload === awaitedPing) {
      awaitedPing = null;
      counters.pingsAnswered += 1;
      return;
    }
    if (payload.startsWith(PING_PREFIX)) return; // another process's ping
    const separator = payload.lastIndexOf(':');
    if (separator <= 0) return;
    const key = payload.slice(0, separator);
    const topic = topics.get(key);
    const version = Number(payload.slice(separator + 1));
    if (!topic || !Number.isSafeInteger(version)) return;
    counters.notifications += 1;
    if (version <= topic.loadedVersion) return;
    topic.announcedVersion = Math.max(topic.announcedVersion, version);
    schedule(key, topic, coalesceMs);
  }

  function onListen(): void {
    // A ping sent before this (re)start may have been lost with the old connection; it says
    // nothing about the new one, so the watchdog starts over instead of restarting a good listener.
    awaitedPing = null;
    counters.listens += 1;
    for (const [key, topic] of topics) {
      topic.resync = true;
      schedule(key, topic, 0);
    }
  }

  function schedule(key: string, topic: Topic<T>, delayMs: number): void {
    if (stopped || topic.timer || topic.loading) return;
    topic.timer = setTimeout(() => void reload(key, topic), delayMs);
  }

  async function reload(key: string, topic: Topic<T>): Promise<void> {
    topic.timer = null;
    topic.loading = true;
    const resync = topic.resync;
    topic.resync = false;
    const announcedBefore = topic.announcedVersion;
    let failed = false;
    try {
      counters.loads += 1;
      const state = await options.load(key);
      if (state && !stopped) {
        topic.loadedVersion = Math.max(topic.loadedVersion, state.version);
        for (const subscriber of topic.subscribers) subscriber.offer(state, resync);
      }
    } catch (error) {
      failed = true;
      topic.resync ||= resync;
      if (!stopped) log(`reading ${key} for its subscribers failed`, error);
    } finally {
      topic.loading = false;
    }
    if (stopped || topics.get(key) !== topic) return;
    if (failed) {
      if (topic.resync || topic.announcedVersion > topic.loadedVersion) schedule(key, topic, READ_RETRY_MS);
      return;
    }
    // Changes announced during the read and not covered by it need one more read.
    const newer = topic.announcedVersion > topic.loadedVersion && topic.announcedVersion > announcedBefore;
    if (topic.resync || newer) schedule(key, topic, coalesceMs);
  }

  async function restartListener(): Promise<void> {
    restarting = true;
    awaitedPing = null;
    counters.restarts += 1;
    try {
      await withTimeout(options.source.restart(), listenTimeoutMs);
    } catch (error) {
      log('re-listening for balance changes failed', error);
    } finally {
      restarting = false;
    }
  }

  function checkListener(): void {
    if (stopped || restarting) return;
    if (awaitedPing !== null) {
      log('the balance listener stopped hearing its channel; listening again');
      void restartListener();
      return;
    }
    pingSequence += 1;
    const ping = `${PING_PREFIX}${pingNonce}:${pingSequence}`;
    awaitedPing = ping;
    // A ping that cannot be sent stays awaited, so the next check restarts the listener.
    options.source.notify(ping).catch(() => {});
  }

  return {
    async start() {
      try {
        await withTimeout(options.source.start({ onNotification, onListen }), listenTimeoutMs);
      } catch (error) {
        log('listening for balance changes failed; retrying', error);
      }
      const interval = options.watchdogIntervalMs ?? null;
      if (interval !== null && !stopped) {
        watchdog = setInterval(checkListener, interval);
        watchdog.unref();
      }
    },

    subscribe(key) {
      let topic = topics.get(key);
      if (!topic) {
        topic = {
          subscribers: new Set(),
          loadedVersion: 0,
          announcedVersion: 0,
          resync: false,
          timer: null,
          loading: false,
        };
        topics.set(key, topic);
      }
      const owner = topic;
      const stream = new VersionedStream<T>(() => {
        owner.subscribers.delete(stream);
        if (owner.subscribers.size === 0 && topics.get(key) === owner) {
          if (owner.timer) clearTimeout(owner.timer);
          topics.delete(key);
        }
      });
      owner.subscribers.add(stream);
      if (stopped) stream.end();
      return stream;
    },

    stats() {
      let subscribers = 0;
      for (const topic of topics.values()) subscribers += topic.subscribers.size;
      return { ...counters, topics: topics.size, subscribers };
    },

    async stop() {
      if (stopped) return;
      stopped = true;
      if (watchdog) clearInterval(watchdog);
      for (const topic of [...topics.values()]) {
        if (topic.timer) clearTimeout(topic.timer);
        for (const subscriber of [...topic.subscribers]) subscriber.end();
      }
      topics.clear();
      await options.source.close().catch((error: unknown) => log('closing the balance listener failed', error));
    },
  };
}

/**
 * A client whose first connection is refused may keep its LISTEN queued, and the promise pending,
 * indefinitely. Waiting for it would stall start-up or block the watchdog for good, so a start
 * that takes too long counts as failed; the watchdog then replaces that client with a new one.
 */
function withTimeout(work: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}
