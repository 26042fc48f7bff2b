import { GraphQLError } from 'graphql';
import { onceClosed } from './once-closed.ts';

/** How many subscriptions may be open at once. */
export interface SubscriptionLimits {
  /** On one WebSocket connection. */
  perConnection: number;
  /** For one token's caller (its role, organization and subject), over WebSockets and SSE together. */
  perToken: number;
}

export const DEFAULT_SUBSCRIPTION_LIMITS: SubscriptionLimits = { perConnection: 20, perToken: 20 };

/** Who holds a subscription: the caller's identity and, over WebSockets, its connection. */
export interface SubscriptionHolder {
  token: string;
  /** The WebSocket the subscription runs on; null over SSE (one stream per request). */
  connection: object | null;
}

/**
 * Counts the open subscriptions of each token and each WebSocket connection. Every subscriber
 * holds memory and a share of the fan-out for as long as it stays, so one client (or one leaked
 * token) may not open them without bound.
 */
export class SubscriptionSlots {
  private readonly byToken = new Map<string, number>();
  private readonly byConnection = new WeakMap<object, number>();

  constructor(private readonly limits: SubscriptionLimits = DEFAULT_SUBSCRIPTION_LIMITS) {}

  /** Open subscriptions of a token (for tests and diagnostics). */
  openFor(token: string): number {
    return this.byToken.get(token) ?? 0;
  }

  /**
   * Takes a slot for `holder`, or throws TOO_MANY_SUBSCRIPTIONS when its token or connection is
   * at its limit. The returned function gives the slot back; calling it again does nothing.
   */
  acquire(holder: SubscriptionHolder): () => void {
    const onToken = this.byToken.get(holder.token) ?? 0;
    if (onToken >= this.limits.perToken) {
      throw tooMany(
        `This token already has ${this.limits.perToken} open subscriptions, the most it may have; end one first.`,
      );
    }
    const onConnection = holder.connection ? (this.byConnection.get(holder.connection) ?? 0) : 0;
    if (holder.connection && onConnection >= this.limits.perConnection) {
      throw tooMany(
        `This connection already has ${this.limits.perConnection} open subscriptions, the most it may have; end one first.`,
      );
    }
    this.byToken.set(holder.token, onToken + 1);
    if (holder.connection) this.byConnection.set(holder.connection, onConnection + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.byToken.get(holder.token) ?? 1) - 1;
      if (left > 0) this.byToken.set(holder.token, left);
      else this.byToken.delete(holder.token);
      if (holder.connection)
        this.byConnection.set(holder.connection, Math.max(0, (this.byConnection.get(holder.connection) ?? 1) - 1));
    };
  }
}

function tooMany(message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code: 'TOO_MANY_SUBSCRIPTIONS' } });
}

/** Passes `source` through and calls `release` once, when it ends or is closed. */
export function releasingOnEnd<T>(source: AsyncIterableIterator<T>, release: () => void): AsyncIterableIterator<T> {
  return onceClosed(source, release);
}
