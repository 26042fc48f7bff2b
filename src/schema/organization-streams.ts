import type { Viewer } from '../auth/tokens.ts';
import type { GraphQLContext } from '../context.ts';
import { untilDeadline } from '../realtime/deadline.ts';
import { releasingOnEnd } from '../realtime/subscription-slots.ts';
import { asQueryInput, authorizeOrganization, requireViewer, unauthenticated } from './authorization.ts';

/** One caller, whichever of its tokens it uses: its role, organization and subject. */
function callerKey(viewer: Viewer): string {
  return `${viewer.role}\u0000${viewer.organizationId ?? ''}\u0000${viewer.subject}`;
}

/** The last event of a subscription whose token expired; resolving it reports UNAUTHENTICATED. */
const TOKEN_EXPIRED = Symbol('token expired');

export type StreamEvent<T> = T | typeof TOKEN_EXPIRED;

/**
 * What every subscription to one organization's stream does when it starts: the organization is
 * authorized, the caller's subscription slot taken, the stream registered (before `prime` checks
 * the organization or sends a first event, so nothing committed in between is missed), and the
 * stream ends with the token, freeing the slot. Should `prime` refuse, the slot and the stream are
 * given back at once.
 */
export function openOrganizationStream<T, S extends AsyncIterableIterator<T>>(
  ctx: GraphQLContext,
  organizationIdArg: string | number,
  open: (organizationId: string) => S,
  prime: (organizationId: string, stream: S) => Promise<void>,
): Promise<AsyncIterableIterator<StreamEvent<T>>> {
  return asQueryInput(async () => {
    const organizationId = authorizeOrganization(ctx, organizationIdArg);
    const viewer = requireViewer(ctx);
    const release = ctx.subscriptionSlots.acquire({ token: callerKey(viewer), connection: ctx.connection });
    const stream = open(organizationId);
    try {
      await prime(organizationId, stream);
    } catch (error) {
      release();
      await stream.return?.();
      throw error;
    }
    return releasingOnEnd(
      untilDeadline<T, typeof TOKEN_EXPIRED>(
        stream,
        viewer.expiresAt === null ? null : viewer.expiresAt * 1000,
        TOKEN_EXPIRED,
      ),
      release,
    );
  });
}

/** A stream's event as the subscription answers it; the token's expiry is UNAUTHENTICATED. */
export function streamEvent<T>(event: StreamEvent<T>): T {
  if (event === TOKEN_EXPIRED) throw unauthenticated('The token has expired.');
  return event;
}
