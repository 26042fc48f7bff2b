import { describe, expect, it } from 'vitest';
import { oneGenerationCost } from '../../src/ledger/alerts.ts';
import type { GenerationModel } from '../../src/ledger/catalog.ts';

function model(overrides: Partial<GenerationModel>): GenerationModel {
  return {
    id: 'm',
    name: 'M',
    tier: 'STANDARD',
    outputType: 'IMAGE',
    unitCredits: 4,
    resolutions: ['HD_720P', 'SD_480P'],
    maxDurationSeconds: null,
    position: 1,
    ...overrides,
  };
}

describe('the cost of one generation an alert speaks in', () => {
  it('prices count 1 at the lowest resolution the model supports, whatever order it lists them in', () => {
    expect(oneGenerationCost(model({}))).toBe(2); // SD_480P: half of 4
    expect(oneGenerationCost(model({ resolutions: ['UHD_4K', 'FHD_1080P'] }))).toBe(6); // FHD_1080P: 1.5 x 4
  });

  it('prices one second of video and a text request without resolution', () => {
    expect(
      oneGenerationCost(
        model({ outputType: 'VIDEO', unitCredits: 5, resolutions: ['HD_720P'], maxDurationSeconds: 30 }),
      ),
    ).toBe(5);
    expect(oneGenerationCost(model({ outputType: 'TEXT', unitCredits: 2, resolutions: [] }))).toBe(2);
  });
});
