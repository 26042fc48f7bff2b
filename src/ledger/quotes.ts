import type { Queryable } from '../db/client.ts';
import { findModel } from './catalog.ts';
import type { LedgerContext } from './context.ts';
import { InvalidInputError } from './errors.ts';
import { availableCredits } from './balance.ts';
import { priceGeneration, type GenerationRequest, type PricedGeneration } from './pricing.ts';
import { echoInput, requireUuid } from './validation.ts';

/** Prices a request against the model catalog; unknown models are invalid input. */
export async function priceRequest(db: Queryable, request: GenerationRequest): Promise<PricedGeneration> {
  const model = await findModel(db, request.modelId);
  if (!model) throw new InvalidInputError(`There is no model ${echoInput(request.modelId)}.`, 'generation.modelId');
  return priceGeneration(model, request);
}

export interface CreditQuote {
  cost: number;
  available: number;
  affordable: boolean;
  /** How many generations exactly like this one (count included) the available balance covers. */
  affordableCount: number;
}

export async function quoteGeneration(
  ctx: LedgerContext,
  organizationId: string,
  request: GenerationRequest,
): Promise<CreditQuote> {
  const orgId = requireUuid(organizationId, 'organizationId');
  const priced = await priceRequest(ctx.db, request);
  const available = await availableCredits(ctx.db, orgId, ctx.clock.now());
  return {
    cost: priced.cost,
    available,
    affordable: available >= priced.cost,
    affordableCount: Math.floor(available / priced.cost),
  };
}
