import { describe, expect, it } from 'vitest';
import { InvalidInputError } from '../../src/ledger/errors.ts';
import { priceGeneration, type PricedModel } from '../../src/ledger/pricing.ts';

const image: PricedModel = {
  id: 'img',
  outputType: 'IMAGE',
  unitCredits: 4,
  resolutions: ['SD_480P', 'HD_720P', 'FHD_1080P', 'UHD_4K'],
  maxDurationSeconds: null,
};
const draft: PricedModel = { ...image, id: 'draft', unitCredits: 1 };
const video: PricedModel = {
  id: 'vid',
  outputType: 'VIDEO',
  unitCredits: 5,
  resolutions: ['SD_480P', 'HD_720P', 'FHD_1080P'],
  maxDurationSeconds: 30,
};
const text: PricedModel = { id: 'txt', outputType: 'TEXT', unitCredits: 2, resolutions: [], maxDurationSeconds: null };

function fieldOf(run: () => unknown): string | null {
  try {
    run();
  } catch (error) {
    if (error instanceof InvalidInputError) return error.field;
    throw error;
  }
  throw new Error('expected an InvalidInputError');
}

describe('priceGeneration', () => {
  it('scales by resolution, duration and count', () => {
    expect(priceGeneration(image, { modelId: 'img', resolution: 'HD_720P' }).cost).toBe(4);
    expect(priceGeneration(image, { modelId: 'img', resolution: 'FHD_1080P', count: 3 }).cost).toBe(18);
    expect(priceGeneration(image, { modelId: 'img', resolution: 'UHD_4K' }).cost).toBe(16);
    expect(priceGeneration(video, { modelId: 'vid', resolution: 'HD_720P', durationSeconds: 10 }).cost).toBe(50);
    expect(priceGeneration(video, { modelId: 'vid', resolution: 'FHD_1080P', durationSeconds: 10 }).cost).toBe(75);
    expect(priceGeneration(text, { modelId: 'txt', count: 4 }).cost).toBe(8);
  });

  it('rounds up to a whole credit and never charges less than 1 per output', () => {
    expect(priceGeneration(draft, { modelId: 'draft', resolution: 'SD_480P' }).unitCost).toBe(1);
    expect(priceGeneration(draft, { modelId: 'draft', resolution: 'FHD_1080P', count: 2 }).cost).toBe(4);
    expect(priceGeneration(video, { modelId: 'vid', resolution: 'SD_480P', durationSeconds: 3 }).cost).toBe(8);
  });

  it('costs more for higher resolution, longer video, and more outputs', () => {
    const costs = ['SD_480P', 'HD_720P', 'FHD_1080P'].map(
      (resolution) =>
        priceGeneration(video, { modelId: 'vid', resolution: resolution as never, durationSeconds: 5 }).cost,
    );
    expect(costs).toEqual([...costs].sort((a, b) => a - b));
    expect(new Set(costs).size).toBe(3);
  });

  it('names the field of each request the model cannot serve', () => {
    expect(fieldOf(() => priceGeneration(image, { modelId: 'img' }))).toBe('generation.resolution');
    expect(fieldOf(() => priceGeneration(video, { modelId: 'vid', resolution: 'UHD_4K', durationSeconds: 5 }))).toBe(
      'generation.resolution',
    );
    expect(fieldOf(() => priceGeneration(video, { modelId: 'vid', resolution: 'HD_720P' }))).toBe(
      'generation.durationSeconds',
    );
    expect(fieldOf(() => priceGeneration(video, { modelId: 'vid', resolution: 'HD_720P', durationSeconds: 31 }))).toBe(
      'generation.durationSeconds',
    );
    expect(fieldOf(() => priceGeneration(video, { modelId: 'vid', resolution: 'HD_720P', durationSeconds: 0 }))).toBe(
      'generation.durationSeconds',
    );
    expect(fieldOf(() => priceGeneration(image, { modelId: 'img', resolution: 'HD_720P', durationSeconds: 5 }))).toBe(
      'generation.durationSeconds',
    );
    expect(fieldOf(() => priceGeneration(text, { modelId: 'txt', resolution: 'HD_720P' }))).toBe(
      'generation.resolution',
    );
    expect(fieldOf(() => priceGeneration(text, { modelId: 'txt', count: 0 }))).toBe('generation.count');
    expect(fieldOf(() => priceGeneration(text, { modelId: 'txt', count: 101 }))).toBe('generation.count');
    expect(fieldOf(() => priceGeneration(text, { modelId: 'txt', count: 1.5 }))).toBe('generation.count');
  });
});
