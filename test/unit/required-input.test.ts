import { describe, expect, it } from 'vitest';
import { InvalidInputError } from '../../src/ledger/errors.ts';
import { priceGeneration, type PricedModel } from '../../src/ledger/pricing.ts';
import {
  requireIntInRange,
  requireKey,
  requireText,
  requireUuid,
  requireValidDate,
} from '../../src/ledger/validation.ts';

function refusal(work: () => unknown): { message: string; field: string | null } {
  try {
    work();
  } catch (error) {
    if (error instanceof InvalidInputError) return { message: error.message, field: error.field ?? null };
    throw error;
  }
  throw new Error('expected an InvalidInputError');
}

describe('a required input field left out', () => {
  // The ledger's checks are typed, but callers outside GraphQL (the CLI, scripts, other code)
  // can still hand them nothing; that is bad input naming the field, not a TypeError (a 500).
  const checks: Array<[string, (value: null | undefined) => unknown]> = [
    ['organizationId', (value) => requireUuid(value, 'organizationId')],
    ['idempotencyKey', (value) => requireKey(value, 'idempotencyKey')],
    ['reason', (value) => requireText(value, 'reason')],
    ['amount', (value) => requireIntInRange(value, 1, 100, 'amount')],
    ['expiresAt', (value) => requireValidDate(value, 'expiresAt')],
  ];
  it.each(checks)('%s is required, whether undefined or null', (field, check) => {
    for (const value of [undefined, null]) {
      expect(refusal(() => check(value))).toEqual({ message: `${field} is required.`, field });
    }
  });

  it('is required in a generation the model needs it for, named by its path', () => {
    const video: PricedModel = {
      id: 'vid',
      outputType: 'VIDEO',
      unitCredits: 2,
      resolutions: ['SD_480P', 'HD_720P'],
      maxDurationSeconds: 10,
    };
    const image: PricedModel = { ...video, id: 'img', outputType: 'IMAGE', maxDurationSeconds: null };
    expect(refusal(() => priceGeneration(video, { modelId: 'vid', resolution: 'SD_480P' }))).toEqual({
      message: 'durationSeconds is required. Model vid takes 1 to 10 seconds.',
      field: 'generation.durationSeconds',
    });
    expect(refusal(() => priceGeneration(image, { modelId: 'img', resolution: null }))).toEqual({
      message: 'resolution is required. Model img supports SD_480P, HD_720P.',
      field: 'generation.resolution',
    });
    // Present but out of range is still a range error.
    expect(
      refusal(() => priceGeneration(video, { modelId: 'vid', resolution: 'SD_480P', durationSeconds: 0 })),
    ).toEqual({
      message: 'durationSeconds must be a whole number from 1 to 10 for model vid.',
      field: 'generation.durationSeconds',
    });
  });
});
