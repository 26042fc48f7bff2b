// Input fields the schema lets a client leave out (they are nullable, since other models do not
// take them) but that a model requires: a video needs its duration and its resolution, an image
// its resolution. Left out or sent as null, each is answered "<field> is required.", naming the
// field, as a quote (BAD_USER_INPUT) and as a reservation (InvalidInputError), which holds nothing.
import { describe, expect } from 'vitest';
import { it, useTestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { QUOTE, RESERVE } from '../support/operations.ts';
import { balanceOf, newOrganization, uniqueKey } from '../support/scenario.ts';

const MISSING: Array<[string, string, Record<string, unknown>, RegExp]> = [
  [
    'a video without its duration',
    'durationSeconds',
    { modelId: 'video-draft', resolution: 'SD_480P' },
    /^durationSeconds is required\. Model video-draft takes 1 to 10 seconds\.$/,
  ],
  [
    'a video with a null duration',
    'durationSeconds',
    { modelId: 'video-draft', resolution: 'SD_480P', durationSeconds: null },
    /^durationSeconds is required\./,
  ],
  [
    'a video without its resolution',
    'resolution',
    { modelId: 'video-draft', durationSeconds: 4 },
    /^resolution is required\. Model video-draft supports SD_480P, HD_720P\.$/,
  ],
  [
    'an image without its resolution',
    'resolution',
    { modelId: 'image-premium' },
    /^resolution is required\. Model image-premium supports /,
  ],
  [
    'an image with a null resolution',
    'resolution',
    { modelId: 'image-premium', resolution: null },
    /^resolution is required\./,
  ],
];

describe.each(drivers)('required input fields the schema leaves nullable (%s)', (driver) => {
  useTestApp(driver);

  it.for(MISSING)('quotes %s as BAD_USER_INPUT "%s is required."', async ([, field, generation, message], { t }) => {
    const org = await newOrganization(t);
    const result = await t.gql(QUOTE, { id: org.id, generation }, org.member);
    expect(result.data).toBeNull();
    expect(result.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: `generation.${field}` });
    expect(result.errors?.[0]?.message).toMatch(message);
  });

  it.for(MISSING)(
    'refuses to reserve %s with InvalidInputError "%s is required."',
    async ([, field, generation, message], { t }) => {
      const org = await newOrganization(t);
      const result = await t.gql(
        RESERVE,
        { input: { organizationId: org.id, idempotencyKey: uniqueKey('required'), generation } },
        org.service,
      );
      expect(result.errors).toBeUndefined();
      expect(result.data.reserveCredits).toMatchObject({
        __typename: 'InvalidInputError',
        field: `generation.${field}`,
      });
      expect(result.data.reserveCredits.message).toMatch(message);
      expect(await balanceOf(t, org)).toMatchObject({ available: 100, reserved: 0 });
    },
  );

  it('still says what range a duration given out of range must be in', async ({ t }) => {
    const org = await newOrganization(t);
    const generation = { modelId: 'video-draft', resolution: 'SD_480P', durationSeconds: 11 };
    const result = await t.gql(QUOTE, { id: org.id, generation }, org.member);
    expect(result.errors?.[0]?.message).toBe(
      'durationSeconds must be a whole number from 1 to 10 for model video-draft.',
    );
  });
});
