import type { GraphQLContext } from '../context.ts';
import type { Balance } from '../ledger/balance.ts';
import { allow, noSuchOrganization } from './authorization.ts';
import { BalanceType, findBalance } from './balance.ts';
import { builder } from './builder.ts';
import { openOrganizationStream, streamEvent } from './organization-streams.ts';

builder.subscriptionType({});

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
      openOrganizationStream<Balance, ReturnType<GraphQLContext['notifier']['subscribe']>>(
        ctx,
        args.organizationId,
        (organizationId) => ctx.notifier.subscribe(organizationId),
        // Registered before the first read, so no change committed in between is missed; the
        // stream drops whichever of the two states turns out older.
        async (organizationId, stream) => {
          stream.offer(await requireBalance(ctx, organizationId));
        },
      ),
    resolve: (event) => streamEvent(event),
  }),
);
