import { asc, eq } from 'drizzle-orm';
import type { Queryable } from '../db/client.ts';
import { creditPacks, generationModels, plans } from '../db/schema.ts';
import type { OutputType } from './pricing.ts';

export type Plan = typeof plans.$inferSelect;
export type CreditPack = typeof creditPacks.$inferSelect;
export type GenerationModel = typeof generationModels.$inferSelect;

export function listPlans(db: Queryable): Promise<Plan[]> {
  return db.select().from(plans).orderBy(asc(plans.position));
}

export function listCreditPacks(db: Queryable): Promise<CreditPack[]> {
  return db.select().from(creditPacks).orderBy(asc(creditPacks.credits));
}

export function listModels(db: Queryable, outputType?: OutputType | null): Promise<GenerationModel[]> {
  const query = db.select().from(generationModels);
  const filtered = outputType ? query.where(eq(generationModels.outputType, outputType)) : query;
  return filtered.orderBy(asc(generationModels.position));
}

export async function findPlan(db: Queryable, id: string): Promise<Plan | undefined> {
  const [plan] = await db.select().from(plans).where(eq(plans.id, id));
  return plan;
}

export async function findCreditPack(db: Queryable, id: string): Promise<CreditPack | undefined> {
  const [pack] = await db.select().from(creditPacks).where(eq(creditPacks.id, id));
  return pack;
}

export async function findModel(db: Queryable, id: string): Promise<GenerationModel | undefined> {
  const [model] = await db.select().from(generationModels).where(eq(generationModels.id, id));
  return model;
}
