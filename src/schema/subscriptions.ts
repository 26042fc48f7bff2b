import type { Viewer } from '../auth/tokens.ts';
import type { GraphQLContext } from '../context.ts';
import type { Balance } from '../ledger/balance.ts';
import { untilDeadline } from '../realtime/deadline.ts';
import { releasingOnEnd } from '../realtime/subscription-slots.ts';
import {
  allow,
  asQueryInput,
  authorizeOrganization,
  noSuchOrganization,
  requireViewer,
  unauthenticated,
} from './authorization.ts';
import { BalanceType, findBalance } from './balance.ts';
import { builder } from './builder.ts';

builder.subscriptionType({});

/** One caller, whichever of its tokens it uses: its role, organization and subject. */
function callerKey(viewer: Viewer): string {
  return `${viewer.role}\u0000${viewer.organizationId ?? ''}\u0000${viewer.subject}`;
}

/** The last event of a subscription whose token expired; resolving it reports UNAUTHENTICATED. */
const TOKEN_EXPIRED = Symbol('token expired');

/** A subscription streams a balance, so an organization that does not exist is bad input. */
async function requireBalance(ctx: GraphQLContext, organizationId: string): Promise<Balance> {
  const balance = await findBalance(ctx, organizationId);
  if (!balance) throw noSuchOrganization();
  return balance;
}

builder.subscriptionField('balanceChanged', (t) =>
  t.field({
    type: BalanceType,
    description:
      "The organization's balance now, then again after every change to it. Versions only grow; " +
      'after a reconnect of the server to its database the current balance is sent again. ' +
      'The subscription ends with UNAUTHENTICATED when the token expires. An id that names no ' +
      'organization is bad input (BAD_USER_INPUT on organizationId): there is no balance to send.',
    authScopes: allow({ roles: ['member', 'service', 'admin'], scopes: ['generation', 'read'] }),
    args: { organizationId: t.arg.id({ required: true }) },
    subscribe: (_root, args, ctx) =>
      asQueryInput(async (): Promise<AsyncIterableIterator<Balance | typeof TOKEN_EXPIRED>> => {
        const organizationId = authorizeOrganization(ctx, args.organizationId);
        const viewer = requireViewer(ctx);
        const release = ctx.subscriptionSlots.acquire({ token: callerKey(viewer), connection: ctx.connection });
        // Registering before the first read means no change committed in between is missed; the
        // stream drops whichever of the two states turns out older.
        const stream = ctx.notifier.subscribe(organizationId);
        try {
          stream.offer(await requireBalance(ctx, organizationId));
        } catch (error) {
          release();
          await stream.return();
          throw error;
        }
        return releasingOnEnd(
          untilDeadline(stream, viewer.expiresAt === null ? null : viewer.expiresAt * 1000, TOKEN_EXPIRED),
          release,
        );
      }),
    resolve: (event) => {
      if (event === TOKEN_EXPIRED) throw unauthenticated('The token has expired.');
      return event;
    },
  }),
);
