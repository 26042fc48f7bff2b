import { findOrganization } from '../ledger/organizations.ts';
import { quoteGeneration, type CreditQuote } from '../ledger/quotes.ts';
import { allow, asQueryInput, authorizeOrganization, noSuchOrganization } from './authorization.ts';
import { builder } from './builder.ts';
import { GenerationInput, generationRequest } from './reservations.ts';

const CreditQuoteType = builder.objectRef<CreditQuote>('CreditQuote').implement({
  description: 'The cost of a generation against the available balance, as the model selector shows it.',
  fields: (t) => ({
    cost: t.exposeInt('cost'),
    available: t.exposeInt('available'),
    affordable: t.exposeBoolean('affordable'),
    affordableCount: t.exposeInt('affordableCount', {
      description: 'How many such generations (count included) the available balance covers.',
    }),
  }),
});

builder.queryField('creditQuote', (t) =>
  t.field({
    type: CreditQuoteType,
    description:
      'Prices a generation for an organization. Like an unknown model, an id that names no organization ' +
      'is bad input (BAD_USER_INPUT on organizationId): there is nothing to price against.',
    authScopes: allow({ roles: ['member', 'service', 'admin'], scopes: ['generation', 'read'] }),
    args: {
      organizationId: t.arg.id({ required: true }),
      generation: t.arg({ type: GenerationInput, required: true }),
    },
    resolve: (_root, args, ctx) =>
      asQueryInput(async () => {
        const organizationId = authorizeOrganization(ctx, args.organizationId);
        const quote = await quoteGeneration(ctx, organizationId, generationRequest(args.generation));
        // Only an empty balance may belong to no organization: lots name theirs.
        if (quote.available === 0 && !(await findOrganization(ctx.db, organizationId))) {
          throw noSuchOrganization();
        }
        return quote;
      }),
  }),
);
