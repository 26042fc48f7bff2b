import { asc, eq } from 'drizzle-orm';
import type { Queryable } from '../db/client.ts';
import { creditPacks, generationModels, plans } from '../db/schema.ts';
import { CATALOG_ID_LENGTH_MAX } from './limits.ts';
import type { OutputType } from './enums.ts';
import { isStorableText } from './validation.ts';

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

/**
 * Whether `id` could name a catalog entry at all. An id that cannot (too long, or text the
 * database cannot hold) is reported as unknown without a query, so such input never reaches SQL.
 */
function isCatalogId(id: string): boolean {
  return id.length > 0 && id.length <= CATALOG_ID_LENGTH_MAX && isStorableText(id);
}

export async function findPlan(db: Queryable, id: string): Promise<Plan | undefined> {
  if (!isCatalogId(id)) return undefined;
  const [plan] = await db.select().from(plans).where(eq(plans.id, id));
  return plan;
}

export async function findCreditPack(db: Queryable, id: string): Promise<CreditPack | undefined> {
  if (!isCatalogId(id)) return undefined;
  const [pack] = await db.select().from(creditPacks).where(eq(creditPacks.id, id));
  return pack;
}

// Every reservation and quote prices its generation, so the model catalog is kept in memory
// instead of costing a round trip each time. Catalogs change only by migration or an operator's
// SQL; a copy older than this is read again, so such a change is seen within the interval.
const MODEL_CATALOG_TTL_MS = 30_000;
const modelCatalogs = new WeakMap<Queryable, { loadedAtMs: number; models: Promise<Map<string, GenerationModel>> }>();

/** The model with this id, from the in-memory catalog of `db`. */
export async function findModel(db: Queryable, id: string): Promise<GenerationModel | undefined> {
  if (!isCatalogId(id)) return undefined;
  const nowMs = Date.now();
  let cached = modelCatalogs.get(db);
  if (!cached || nowMs - cached.loadedAtMs > MODEL_CATALOG_TTL_MS) {
    const models = db
      .select()
      .from(generationModels)
      .then((rows) => new Map(rows.map((model) => [model.id, model])));
    cached = { loadedAtMs: nowMs, models };
    modelCatalogs.set(db, cached);
    // A failed read is not kept: the next request tries again.
    models.catch(() => modelCatalogs.get(db) === cached && modelCatalogs.delete(db));
  }
  return (await cached.models).get(id);
}
