import type { OutputType } from './enums.ts';
import { InvalidInputError } from './errors.ts';
import { GENERATION_COUNT_MAX } from './limits.ts';
import { requiredInput } from './validation.ts';

// Resolutions are stored as text, not as a database enum, so this list is their one source: the
// GraphQL enum is built from it and the price table below must name every one of them.
export const RESOLUTIONS = ['SD_480P', 'HD_720P', 'FHD_1080P', 'UHD_4K'] as const;
export type Resolution = (typeof RESOLUTIONS)[number];

/** Cost of one unit at each resolution, in percent of the model's HD_720P unit price. */
const RESOLUTION_PERCENT: Record<Resolution, number> = {
  SD_480P: 50,
  HD_720P: 100,
  FHD_1080P: 150,
  UHD_4K: 400,
};

export interface PricedModel {
  id: string;
  outputType: OutputType;
  unitCredits: number;
  resolutions: string[];
  maxDurationSeconds: number | null;
}

export interface GenerationRequest {
  modelId: string;
  resolution?: Resolution | null;
  durationSeconds?: number | null;
  count?: number | null;
}

/** A generation request checked against its model, with every optional part made explicit. */
export interface PricedGeneration {
  modelId: string;
  resolution: Resolution | null;
  durationSeconds: number | null;
  count: number;
  /** Credits for one generation. */
  unitCost: number;
  /** Credits for all `count` generations. */
  cost: number;
}

/**
 * The one pricing rule, shared by quotes and reservations: a model's unit price, times the
 * seconds of video, scaled by resolution, rounded up to a whole credit (at least 1), times count.
 * Throws InvalidInputError naming the field for any request the model cannot serve.
 */
export function priceGeneration(model: PricedModel, request: GenerationRequest): PricedGeneration {
  const count = request.count ?? 1;
  if (!Number.isSafeInteger(count) || count < 1 || count > GENERATION_COUNT_MAX) {
    throw new InvalidInputError(`count must be a whole number from 1 to ${GENERATION_COUNT_MAX}.`, 'generation.count');
  }
  const resolution = checkResolution(model, request.resolution ?? null);
  const durationSeconds = checkDuration(model, request.durationSeconds ?? null);
  const percent = resolution ? RESOLUTION_PERCENT[resolution] : 100;
  const units = durationSeconds ?? 1;
  const unitCost = Math.max(1, Math.ceil((model.unitCredits * units * percent) / 100));
  return { modelId: model.id, resolution, durationSeconds, count, unitCost, cost: unitCost * count };
}

function checkResolution(model: PricedModel, resolution: Resolution | null): Resolution | null {
  if (model.outputType === 'TEXT') {
    if (resolution !== null) {
      throw new InvalidInputError(`Model ${model.id} produces text and takes no resolution.`, 'generation.resolution');
    }
    return null;
  }
  if (resolution === null) {
    throw requiredInput('generation.resolution', `Model ${model.id} supports ${model.resolutions.join(', ')}.`);
  }
  if (!model.resolutions.includes(resolution)) {
    throw new InvalidInputError(
      `Model ${model.id} does not support ${resolution}; it supports ${model.resolutions.join(', ')}.`,
      'generation.resolution',
    );
  }
  return resolution;
}

function checkDuration(model: PricedModel, durationSeconds: number | null): number | null {
  if (model.outputType !== 'VIDEO') {
    if (durationSeconds !== null) {
      throw new InvalidInputError(
        `Model ${model.id} is not a video model and takes no duration.`,
        'generation.durationSeconds',
      );
    }
    return null;
  }
  const max = model.maxDurationSeconds ?? 0;
  if (durationSeconds === null) {
    throw requiredInput('generation.durationSeconds', `Model ${model.id} takes 1 to ${max} seconds.`);
  }
  if (!Number.isSafeInteger(durationSeconds) || durationSeconds < 1 || durationSeconds > max) {
    throw new InvalidInputError(
      `durationSeconds must be a whole number from 1 to ${max} for model ${model.id}.`,
      'generation.durationSeconds',
    );
  }
  return durationSeconds;
}
