import { useReadinessCheck, type Plugin } from 'graphql-yoga';
import type { GraphQLContext } from '../context.ts';
import { MigrationsPendingError, ping, requireMigrated, type Db } from '../db/client.ts';
import { isConnectionError } from '../db/errors.ts';
import type { DatabaseHealth } from './database-health.ts';

/** A readiness probe that takes longer than this counts as not ready (load balancers time out too). */
const READY_TIMEOUT_MS = 2_000;

export type Readiness = { ready: true } | { ready: false; reason: 'database unavailable' | 'migrations pending' };

/**
 * Whether this instance should get traffic: the database answers and has every migration this
 * code needs. Once the migrations have been seen applied they are not checked again (they cannot
 * be unapplied under a running process), so a probe costs one `select 1`. While the health gate
 * already knows the database is down, the answer is immediate and costs no connection attempt.
 */
export class ReadinessCheck {
  #migrated = false;

  constructor(
    private readonly db: Db,
    private readonly health: DatabaseHealth,
  ) {}

  async check(): Promise<Readiness> {
    if (!this.health.available) return { ready: false, reason: 'database unavailable' };
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<Readiness>((resolve) => {
      timer = setTimeout(() => resolve({ ready: false, reason: 'database unavailable' }), READY_TIMEOUT_MS);
    });
    try {
      return await Promise.race([this.#probe(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async #probe(): Promise<Readiness> {
    try {
      if (this.#migrated) await ping(this.db);
      else {
        await requireMigrated(this.db);
        this.#migrated = true;
      }
      return { ready: true };
    } catch (error) {
      if (error instanceof MigrationsPendingError) return { ready: false, reason: 'migrations pending' };
      // The gate learns of the outage from the probe too, so requests are refused at once.
      if (isConnectionError(error)) this.health.reportConnectionError(error);
      return { ready: false, reason: 'database unavailable' };
    }
  }
}

/**
 * `GET /ready`: 200 `{"status":"ready"}`, or 503 with the reason. `GET /health` is yoga's own
 * health check: 200 while the process serves HTTP, whatever the database does.
 */
export function useReadiness(readiness: ReadinessCheck): Plugin<GraphQLContext> {
  return useReadinessCheck({
    endpoint: '/ready',
    check: async () => {
      const state = await readiness.check();
      const body = state.ready ? { status: 'ready' } : { status: 'unavailable', reason: state.reason };
      return new Response(JSON.stringify(body), {
        status: state.ready ? 200 : 503,
        headers: { 'content-type': 'application/json', 'cache-control': 'no-store' },
      });
    },
  }) as Plugin<GraphQLContext>;
}
