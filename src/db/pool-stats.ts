import type postgres from 'postgres';

export interface PoolStats {
  /** Connections the pool may open. */
  size: number;
  /** Statements and transactions holding a pooled connection now. */
  active: number;
  /** Statements and transactions waiting for one. */
  waiting: number;
}

/**
 * The pool drizzle uses, counting what is in flight on it, for the metrics: postgres.js keeps
 * its queues to itself. Every statement outside a transaction (`unsafe`) and every transaction
 * (`begin`) holds one pooled connection while it runs, so whatever is in flight beyond the pool's
 * size is waiting for a connection. Statements inside a transaction run on that transaction's
 * connection and are not counted again.
 */
export function countingPool(client: postgres.Sql, size: number): { sql: postgres.Sql; stats(): PoolStats } {
  let inFlight = 0;
  const track = <T>(work: PromiseLike<T>): Promise<T> => {
    inFlight += 1;
    return Promise.resolve(work).finally(() => {
      inFlight -= 1;
    });
  };
  const sql = new Proxy(client, {
    get(target, property, receiver) {
      if (property === 'begin') {
        return (...args: unknown[]) => track((target.begin as (...a: unknown[]) => PromiseLike<unknown>)(...args));
      }
      if (property === 'unsafe') {
        return (...args: Parameters<postgres.Sql['unsafe']>) => counted(target.unsafe(...args), track);
      }
      return Reflect.get(target, property, receiver);
    },
  });
  return { sql, stats: () => ({ size, active: Math.min(inFlight, size), waiting: Math.max(0, inFlight - size) }) };
}

/**
 * A postgres.js query is lazy: it runs when first awaited, and `.values()` must be chosen before
 * that. So the count starts at `then`, and `.values()` hands back a counted query again.
 */
function counted<T extends object>(query: T, track: <R>(work: PromiseLike<R>) => Promise<R>): T {
  return new Proxy(query, {
    get(target, property) {
      if (property === 'then') {
        return (onFulfilled?: (value: unknown) => unknown, onRejected?: (reason: unknown) => unknown) =>
          track(target as unknown as PromiseLike<unknown>).then(onFulfilled, onRejected);
      }
      if (property === 'values') {
        return (...args: unknown[]) =>
          counted((target as unknown as { values(...a: unknown[]): object }).values(...args), track);
      }
      const value = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}
