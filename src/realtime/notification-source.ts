import type { PGlite } from '@electric-sql/pglite';
import type postgres from 'postgres';
import type { Database } from '../db/client.ts';

export interface NotificationHandlers {
  onNotification(payload: string): void;
  /** Called each time listening (re)starts, including after a reconnect: the moment to resync. */
  onListen(): void;
}

/** The LISTEN side of one notification channel, on whichever database the service runs. */
export interface NotificationSource {
  start(handlers: NotificationHandlers): Promise<void>;
  /** Throws the listening connection away and listens afresh (the watchdog's remedy). */
  restart(): Promise<void>;
  /** Sends a notification on the channel over an ordinary connection (the watchdog's ping). */
  notify(payload: string): Promise<void>;
  close(): Promise<void>;
}

export interface PostgresSourceOptions {
  channel: string;
  /** Opens a new client used for nothing but LISTEN, so the pool never lends that connection out. */
  connectListener: () => postgres.Sql;
  /** The pool, for sending pings. */
  pool: postgres.Sql;
}

/**
 * PostgreSQL: a dedicated connection runs LISTEN. postgres.js reconnects it by itself and calls
 * `onlisten` again afterwards; the watchdog covers the cases it does not (a reconnect that gives
 * up, a connection that stays open but silently stops delivering) by replacing the whole client.
 */
export function postgresNotificationSource(options: PostgresSourceOptions): NotificationSource {
  let handlers: NotificationHandlers | null = null;
  let client: postgres.Sql | null = null;
  let closed = false;

  async function listen(): Promise<void> {
    const current = options.connectListener();
    client = current;
    // A replaced client may still deliver a late message; only the current one speaks.
    await current.listen(
      options.channel,
      (payload) => {
        if (client === current) handlers?.onNotification(payload);
      },
      () => {
        if (client === current && !closed) handlers?.onListen();
      },
    );
  }

  async function drop(): Promise<void> {
    const old = client;
    client = null;
    await old?.end({ timeout: 0 }).catch(() => {});
  }

  return {
    async start(h) {
      handlers = h;
      await listen();
    },
    async restart() {
      await drop();
      if (!closed) await listen();
    },
    async notify(payload) {
      await options.pool.notify(options.channel, payload);
    },
    async close() {
      closed = true;
      await drop();
    },
  };
}

/**
 * PGlite: the embedded database is one in-process connection with its own listen/notify, which
 * cannot drop, so it is heard once and never needs a resync.
 */
export function pgliteNotificationSource(pglite: PGlite, channel: string): NotificationSource {
  let handlers: NotificationHandlers | null = null;
  let unlisten: (() => Promise<void>) | null = null;

  async function listen(): Promise<void> {
    unlisten = await pglite.listen(channel, (payload) => handlers?.onNotification(payload));
    handlers?.onListen();
  }

  async function stop(): Promise<void> {
    const current = unlisten;
    unlisten = null;
    // After the database itself was closed there is nothing left to unlisten from.
    await current?.().catch(() => {});
  }

  return {
    async start(h) {
      handlers = h;
      await listen();
    },
    async restart() {
      await stop();
      await listen();
    },
    async notify(payload) {
      await pglite.query('select pg_notify($1, $2)', [channel, payload]);
    },
    async close() {
      handlers = null;
      await stop();
    },
  };
}

/** The source that fits the database the service runs on. */
export function notificationSourceFor(database: Database, channel: string): NotificationSource {
  if (database.driver === 'pglite') return pgliteNotificationSource(database.pglite!, channel);
  return postgresNotificationSource({
    channel,
    connectListener: database.connectListener!,
    pool: database.postgresClient!,
  });
}
