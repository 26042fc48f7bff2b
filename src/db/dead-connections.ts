import type postgres from 'postgres';
import { isConnectionError, isLostConnection } from './errors.ts';

/**
 * The postgres.js pool as drizzle should use it: a statement that failed only because the pooled
 * connection it was given had died is run again on another connection.
 *
 * Why. A pooled connection can be dead when it is handed out: its backend was terminated
 * (pg_terminate_backend, a failover, an idle timeout) and the pool has not processed the close
 * yet. Worse, postgres.js 3.4.9 keeps the error of a connection whose backend was terminated
 * while a query ran on it, and fails the first query it is given after it reconnects with that
 * old error, even when the database has long been back (`terminating connection due to
 * administrator command`, 57P01). That query is never sent. Upstream: porsager/postgres#1215
 * (open, unreleased: "the first query after reconnect can receive the old backend's fatal
 * error"), reproduced in test/reliability/dead-connections.test.ts.
 *
 * Every statement is prepared (named and parsed once per connection, then only bound and run):
 * drizzle asks postgres.js for unnamed statements, which PostgreSQL parses and plans again each
 * time, and the ledger's few statement shapes (array parameters keep their text fixed) were
 * spending more database time on parsing than on running.
 *
 * What is retried, and why that is safe:
 * - A transaction whose BEGIN failed: none of its work ran, so it is begun again. Once the
 *   callback has started it is never retried here (its statements may have run; the caller sees
 *   the connection error and its request is answered SERVICE_UNAVAILABLE).
 * - A statement outside any transaction that is a read (`select …`): running it again changes
 *   nothing. Other statements outside a transaction are not retried, since one that died while
 *   committing may have committed.
 * Only a connection that died is retried; a connection that cannot be opened (refused, timed out,
 * database starting) fails at once, so an outage is still reported without delay. A dead pooled
 * connection fails at most two attempts (the statement it was given, then the one it replays the
 * old error onto once reconnected), so twice the pool size plus one always reaches a live one.
 *
 * And a transaction whose connection died sends nothing more. postgres.js 3.4.9 runs what its code
 * still sends, and its COMMIT or ROLLBACK, on the same connection object, which the pool may have
 * reconnected for another request meanwhile: a statement of the failed transaction then commits
 * outside any transaction (porsager/postgres#1216), or, written before the new connection's
 * start-up message, makes the server drop it ("invalid length of startup packet") while the
 * driver waits forever for an answer. So once the connection is lost, the transaction's
 * statements fail at once, and its callback never settles: postgres.js then has nothing to end
 * (begin() has already failed with the connection error, and nothing else holds the callback).
 */
export function retryOnDeadConnection(client: postgres.Sql, poolSize: number): postgres.Sql {
  const attempts = 2 * poolSize + 1;
  async function begin(...args: unknown[]): Promise<unknown> {
    const work = args[args.length - 1] as (tx: postgres.TransactionSql) => unknown;
    const mode = args.length > 1 ? (args[0] as string) : undefined;
    for (let attempt = 1; ; attempt += 1) {
      const state: TransactionState = { began: false, lost: null };
      const body = (tx: postgres.TransactionSql) => {
        state.began = true;
        return untilLost(state, () => work(guarded(tx, state)));
      };
      const pending = mode === undefined ? client.begin(body) : client.begin(mode, body);
      // begin() fails with the connection error the moment the connection closes, before the
      // callback hears of it through its own statements.
      pending.catch((error: unknown) => {
        if (isLostConnection(error)) state.lost ??= error;
      });
      try {
        return await pending;
      } catch (error) {
        if (state.began || attempt >= attempts || !isLostConnection(error)) throw error;
      }
    }
  }

  function unsafe(
    query: string,
    parameters?: postgres.ParameterOrJSON<never>[],
    options?: postgres.UnsafeQueryOptions,
  ) {
    const prepared = { ...options, prepare: true };
    if (!/^\s*select\b/i.test(query)) return client.unsafe(query, parameters, prepared);
    return new RetriedRead((values) => {
      const pending = client.unsafe(query, parameters, prepared);
      return values ? pending.values() : pending;
    }, attempts);
  }

  return new Proxy(client, {
    get(target, property, receiver) {
      if (property === 'begin') return begin;
      if (property === 'unsafe') return unsafe;
      return Reflect.get(target, property, receiver);
    },
  });
}

interface TransactionState {
  /** The callback has started: BEGIN was acknowledged. */
  began: boolean;
  /** The error with which the transaction's connection was lost, once it was. */
  lost: unknown;
}

const never = () => new Promise<never>(() => {});

/** Runs a transaction's callback, which settles as usual unless the connection is lost first. */
async function untilLost<T>(state: TransactionState, run: () => T | Promise<T>): Promise<T> {
  let settled: { value: T } | { error: unknown };
  try {
    settled = { value: await run() };
  } catch (error) {
    settled = { error };
  }
  // A statement fails with the connection error in the same moment begin() does; let that land.
  if (!state.lost && 'error' in settled && isConnectionError(settled.error))
    await new Promise((resolve) => setImmediate(resolve));
  if (state.lost) return never();
  if ('error' in settled) throw settled.error;
  return settled.value;
}

/** The transaction as its callback sees it: once the connection is lost, a statement fails at once. */
function guarded(tx: postgres.TransactionSql, state: TransactionState): postgres.TransactionSql {
  return new Proxy(tx, {
    get(target, property, receiver) {
      if (property === 'unsafe') {
        return (...args: Parameters<postgres.TransactionSql['unsafe']>) =>
          state.lost ? new FailedStatement(state.lost) : target.unsafe(args[0], args[1], { ...args[2], prepare: true });
      }
      if (property === 'savepoint') {
        return (...args: unknown[]) =>
          state.lost ? Promise.reject(state.lost) : (target.savepoint as (...a: unknown[]) => unknown)(...args);
      }
      return Reflect.get(target, property, receiver);
    },
  });
}

/** A statement refused without being sent, in the two forms drizzle awaits. */
class FailedStatement implements PromiseLike<never> {
  constructor(private readonly error: unknown) {}

  values(): Promise<never> {
    return Promise.reject(this.error);
  }

  then<A = never, B = never>(
    onFulfilled?: ((value: never) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    return Promise.reject(this.error).then(onFulfilled, onRejected);
  }
}

/**
 * A read that runs (like a postgres.js query) only once awaited, as rows or, after `values()`,
 * as arrays of values: the two forms drizzle uses.
 */
class RetriedRead implements PromiseLike<unknown> {
  private result: Promise<unknown> | null = null;

  constructor(
    private readonly run: (values: boolean) => PromiseLike<unknown>,
    private readonly attempts: number,
  ) {}

  values(): Promise<unknown> {
    this.result ??= this.execute(true);
    return this.result;
  }

  then<A = unknown, B = never>(
    onFulfilled?: ((value: unknown) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    this.result ??= this.execute(false);
    return this.result.then(onFulfilled, onRejected);
  }

  private async execute(values: boolean): Promise<unknown> {
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.run(values);
      } catch (error) {
        if (attempt >= this.attempts || !isLostConnection(error)) throw error;
      }
    }
  }
}
