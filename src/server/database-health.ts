import { GraphQLError, type ASTNode, type Source } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { GraphQLContext } from '../context.ts';

const PROBE_INTERVAL_MS = 250;

/**
 * Whether the database can be reached, as last seen. A connection error marks it down; from
 * then on a probe (`select 1`) runs every 250 ms until one succeeds.
 *
 * While it is down, requests are refused at once instead of each waiting in the driver's queue
 * for a connection attempt of its own: postgres.js makes one attempt per pooled connection per
 * retry delay, so under steady traffic the queue (and every request's wait) would only grow.
 */
export class DatabaseHealth {
  private down = false;
  private stopped = false;
  private probing: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private wake: (() => void) | null = null;

  constructor(
    private readonly probe: () => Promise<void>,
    private readonly log: (message: string, error?: unknown) => void = () => {},
    private readonly probeIntervalMs = PROBE_INTERVAL_MS,
  ) {}

  get available(): boolean {
    return !this.down;
  }

  /** A request failed because the database could not be reached. */
  reportConnectionError(error: unknown): void {
    if (this.down || this.stopped) return;
    this.down = true;
    this.log('database unreachable; refusing requests until it answers again', error);
    this.probing = this.probeUntilUp();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.wake?.();
    await this.probing;
  }

  private async probeUntilUp(): Promise<void> {
    while (!this.stopped) {
      try {
        await this.probe();
        this.down = false;
        this.log('database reachable again');
        return;
      } catch {
        await new Promise<void>((resolve) => {
          this.wake = resolve;
          this.timer = setTimeout(resolve, this.probeIntervalMs);
          this.timer.unref();
        });
      }
    }
  }
}

/** Refuses operations with SERVICE_UNAVAILABLE while the database is known to be down. */
export function useDatabaseHealthGate(health: DatabaseHealth): Plugin<GraphQLContext> {
  return {
    onExecute({ setResultAndStopExecution }) {
      if (!health.available) setResultAndStopExecution({ errors: [serviceUnavailable()] });
    },
    onSubscribe({ setResultAndStopExecution }) {
      if (!health.available) setResultAndStopExecution({ errors: [serviceUnavailable()] });
    },
  };
}

/** The answer while the database cannot be reached: the caller may retry the same request. */
export function serviceUnavailable(
  located?: {
    nodes?: ReadonlyArray<ASTNode> | undefined;
    source?: Source | undefined;
    positions?: ReadonlyArray<number> | undefined;
    path?: ReadonlyArray<string | number> | undefined;
  },
  message = 'The database is unavailable; retry shortly.',
): GraphQLError {
  return new GraphQLError(message, {
    nodes: located?.nodes,
    source: located?.source,
    positions: located?.positions,
    path: located?.path,
    extensions: {
      code: 'SERVICE_UNAVAILABLE',
      http: { status: 503, headers: { 'Retry-After': '1' } },
    },
  });
}
