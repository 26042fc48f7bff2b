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

/**
 * One source per channel, in the order given. On PostgreSQL a dedicated connection runs LISTEN,
 * and the sources share it (one `credits-listener` per process, whatever it listens to).
 * postgres.js reconnects it by itself and calls `onlisten` again afterwards; the watchdog covers
 * the cases it does not (a reconnect that gives up, a connection that stays open but silently
 * stops delivering) by replacing the whole client: a restart of any source replaces that
 * connection for all, and each is told it listens afresh.
 */
export function notificationSourcesFor(database: Database, channels: string[]): NotificationSource[] {
  if (database.driver === 'pglite')
    return channels.map((channel) => pgliteNotificationSource(database.pglite!, channel));
  return sharedPostgresSources(channels, database.connectListener!, database.postgresClient!);
}

function sharedPostgresSources(
  channels: string[],
  connectListener: () => postgres.Sql,
  pool: postgres.Sql,
): NotificationSource[] {
  const handlers = new Map<string, NotificationHandlers>();
  const open = new Set<string>();
  let client: postgres.Sql | null = null;
  let listening: Promise<void> | null = null;

  async function listen(): Promise<void> {
    const current = connectListener();
    client = current;
    for (const channel of channels) {
      // A replaced client may still deliver a late message; only the current one speaks.
      await current.listen(
        channel,
        (payload) => {
          if (client === current) handlers.get(channel)?.onNotification(payload);
        },
        () => {
          if (client === current) handlers.get(channel)?.onListen();
        },
      );
    }
  }

  async function drop(): Promise<void> {
    const old = client;
    client = null;
    listening = null;
    await old?.end({ timeout: 0 }).catch(() => {});
  }

  return channels.map(
    (channel): NotificationSource => ({
      async start(h) {
        handlers.set(channel, h);
        open.add(channel);
        if (listening) {
          // Already listening for another channel: this one was registered with it.
          await listening;
          h.onListen();
          return;
        }
        listening = listen();
        await listening;
      },
      async restart() {
        await drop();
        if (open.size > 0) {
          listening = listen();
          await listening;
        }
      },
      async notify(payload) {
        await pool.notify(channel, payload);
      },
      async close() {
        handlers.delete(channel);
        open.delete(channel);
        if (open.size === 0) await drop();
      },
    }),
  );
}
