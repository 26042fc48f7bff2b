import { quoteGeneration, type CreditQuote } from '../ledger/quotes.ts';
import { asQueryInput, authorizeOrganization } from './authorization.ts';
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
    args: {
      organizationId: t.arg.id({ required: true }),
      generation: t.arg({ type: GenerationInput, required: true }),
    },
    resolve: (_root, args, ctx) =>
      asQueryInput(() => {
        authorizeOrganization(ctx, String(args.organizationId), 'member');
        return quoteGeneration(ctx, String(args.organizationId), generationRequest(args.generation));
      }),
  }),
);
