import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Viewer } from '../auth/tokens.ts';

/**
 * Fair intake: how many requests of one caller (an organization's tokens, or one admin) a process
 * works on at once; the rest wait here, before their body is read or their operation parsed.
 *
 * The organization queue (src/ledger/organization-queue.ts) keeps a burst from holding the
 * connection pool, but not from holding the CPU: a process takes in every request it is sent
 * (body, parse, validation, authorization, execution up to the ledger) before the ledger can
 * queue it, and on a small machine a thousand requests from one organization make every other
 * organization's request wait behind that work. Here a burst is taken in a few at a time, as its
 * earlier requests finish, so another organization's request waits behind at most one caller's
 * handful. Like Stripe's concurrent-request limiter, but a request over the limit waits its turn
 * instead of being refused, up to a bound.
 */
export interface IntakeLimits {
  /** Requests of one caller a process works on at once. */
  concurrent: number;
  /** Requests of one caller that may wait; one more is refused with 429. */
  waitingMax: number;
}

interface CallerIntake {
  running: number;
  waiting: Array<() => void>;
}

export class TenantIntake {
  private readonly callers = new Map<string, CallerIntake>();

  constructor(private readonly limits: IntakeLimits) {
    if (!(limits.concurrent >= 1) || !(limits.waitingMax >= 0)) {
      throw new Error('Intake limits need concurrent >= 1 and waitingMax >= 0.');
    }
  }

  /** Requests of `key` being worked on and waiting now (for tests and metrics). */
  stats(key: string): { running: number; waiting: number } {
    const caller = this.callers.get(key);
    return { running: caller?.running ?? 0, waiting: caller?.waiting.length ?? 0 };
  }

  /**
   * Resolves with a release function once `key` may start one more request; null when too many
   * of its requests already wait (the caller answers 429).
   */
  enter(key: string): Promise<(() => void) | null> | (() => void) {
    let caller = this.callers.get(key);
    if (!caller) {
      caller = { running: 0, waiting: [] };
      this.callers.set(key, caller);
    }
    if (caller.running < this.limits.concurrent) {
      caller.running += 1;
      return this.releaser(key, caller);
    }
    if (caller.waiting.length >= this.limits.waitingMax) return Promise.resolve(null);
    const waiting = caller;
    return new Promise((resolve) => waiting.waiting.push(() => resolve(this.releaser(key, waiting))));
  }

  private releaser(key: string, caller: CallerIntake): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = caller.waiting.shift();
      // The slot passes straight to the next waiter; the count only drops when nobody waits.
      if (next) next();
      else {
        caller.running -= 1;
        if (caller.running === 0) this.callers.delete(key);
      }
    };
  }
}

/** Whose request this is, for its intake: the organization of a member or service, or the admin. */
export function intakeKeyOf(viewer: Viewer): string {
  return viewer.organizationId !== null ? `organization:${viewer.organizationId}` : `admin:${viewer.subject}`;
}

/**
 * Wraps the HTTP handler: a request that carries a valid token waits for its caller's intake slot,
 * held until its response ends. Requests without a valid token (health, metrics, refusals to be)
 * and event streams (subscriptions, long-lived and capped on their own) pass straight through.
 */
export function withFairIntake(
  handler: RequestListener,
  intake: TenantIntake,
  viewerOf: (authorization: string) => Promise<Viewer>,
): RequestListener {
  return (request: IncomingMessage, response: ServerResponse) => {
    const authorization = request.headers.authorization;
    if (!authorization || isEventStream(request)) {
      handler(request, response);
      return;
    }
    // Listened for from the start: a client that gives up while its request waits has closed the
    // response before the request's turn comes, and 'close' is not emitted again. Its slot must
    // then be given back at once, or enough such requests would stop the caller for good.
    let closed = false;
    let release: (() => void) | null = null;
    response.once('close', () => {
      closed = true;
      release?.();
    });
    viewerOf(authorization).then(
      async (viewer) => {
        release = await intake.enter(intakeKeyOf(viewer));
        if (release === null) return refuse(response);
        if (closed) return release();
        handler(request, response);
      },
      // The handler refuses the token with its own words.
      () => handler(request, response),
    );
  };
}

function isEventStream(request: IncomingMessage): boolean {
  return (request.headers.accept ?? '').includes('text/event-stream');
}

function refuse(response: ServerResponse): void {
  response.writeHead(429, { 'Content-Type': 'application/json; charset=utf-8', 'Retry-After': '1' });
  response.end(
    JSON.stringify({
      errors: [
        {
          message: 'Too many requests of this organization are waiting; retry after a second.',
          extensions: { code: 'RATE_LIMITED' },
        },
      ],
    }),
  );
}
