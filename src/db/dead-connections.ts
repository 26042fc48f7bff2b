import type postgres from 'postgres';
import { isLostConnection } from './errors.ts';

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
 */
export function retryOnDeadConnection(client: postgres.Sql, poolSize: number): postgres.Sql {
  const attempts = 2 * poolSize + 1;
  async function begin(...args: unknown[]): Promise<unknown> {
    const work = args[args.length - 1] as (tx: postgres.TransactionSql) => unknown;
    const mode = args.length > 1 ? (args[0] as string) : undefined;
    for (let attempt = 1; ; attempt += 1) {
      let began = false;
      const body = (tx: postgres.TransactionSql) => {
        began = true;
        return work(tx);
      };
      try {
        return await (mode === undefined ? client.begin(body) : client.begin(mode, body));
      } catch (error) {
        if (began || attempt >= attempts || !isLostConnection(error)) throw error;
      }
    }
  }

  function unsafe(query: string, parameters?: postgres.ParameterOrJSON<never>[], options?: postgres.UnsafeQueryOptions) {
    if (!/^\s*select\b/i.test(query)) return client.unsafe(query, parameters, options);
    return new RetriedRead((values) => {
      const pending = client.unsafe(query, parameters, options);
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

  then<A = unknown, B = never>(onFulfilled?: ((value: unknown) => A | PromiseLike<A>) | null, onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null): Promise<A | B> {
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
