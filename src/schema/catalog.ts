import {
  listCreditPacks,
  listModels,
  listPlans,
  type CreditPack,
  type GenerationModel,
  type Plan,
} from '../ledger/catalog.ts';
import type { Resolution } from '../ledger/pricing.ts';
import { SCOPES } from '../auth/tokens.ts';
import { allow } from './authorization.ts';
import { builder } from './builder.ts';
import { ModelTierEnum, OutputTypeEnum, ResolutionEnum } from './enums.ts';

export const GenerationModelType = builder.objectRef<GenerationModel>('GenerationModel').implement({
  description: 'A model that can be run on the canvas, with what it supports.',
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    tier: t.field({ type: ModelTierEnum, resolve: (model) => model.tier }),
    outputType: t.field({ type: OutputTypeEnum, resolve: (model) => model.outputType }),
    resolutions: t.field({
      type: [ResolutionEnum],
      description: 'Resolutions this model renders; empty for text models.',
      resolve: (model) => model.resolutions as Resolution[],
    }),
    maxDurationSeconds: t.exposeInt('maxDurationSeconds', {
      nullable: true,
      description: 'The longest video this model makes; null for images and text.',
    }),
  }),
});

export const PlanType = builder.objectRef<Plan>('Plan').implement({
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    monthlyCredits: t.exposeInt('monthlyCredits', { description: 'Subscription credits granted each billing cycle.' }),
  }),
});

export const CreditPackType = builder.objectRef<CreditPack>('CreditPack').implement({
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    credits: t.exposeInt('credits'),
    priceCents: t.exposeInt('priceCents'),
  }),
});

builder.queryFields((t) => ({
  models: t.field({
    type: [GenerationModelType],
    authScopes: allow({ roles: ['member', 'service', 'admin'], scopes: SCOPES }),
    args: { outputType: t.arg({ type: OutputTypeEnum, required: false }) },
    resolve: (_root, args, ctx) => listModels(ctx.db, args.outputType),
  }),
  plans: t.field({
    type: [PlanType],
    authScopes: allow({ roles: ['member', 'service', 'admin'], scopes: SCOPES }),
    resolve: (_root, _args, ctx) => listPlans(ctx.db),
  }),
  creditPacks: t.field({
    type: [CreditPackType],
    authScopes: allow({ roles: ['member', 'service', 'admin'], scopes: SCOPES }),
    resolve: (_root, _args, ctx) => listCreditPacks(ctx.db),
  }),
}));
