// Proof that the two limiter settings differ: a member token (the one role production limits
// tightly, 50/s with a burst of 200) sends requests of 10 aliased reserveCredits, 30 at a time,
// until one is refused or 60 requests (600 mutations) have gone. Each carries an invalid
// ttlSeconds, so nothing is written and no database work is done: with the production limiter a
// request is refused with 429 RATE_LIMITED after about 20, with it off none is. (The bucket refills
// at 50/s, so on a slow machine a fixed small number of requests might never empty it.)
import { GraphQLHttp, judge } from '../graphql.ts';
import type { BenchOrganization } from '../setup.ts';
import { signToken } from '../tokens.ts';

export interface LimiterProbe {
  requests: number;
  mutationsPerRequest: number;
  accepted: number;
  refused: number;
  failures: { count: number; samples: string[] };
}

const REQUESTS_MAX = 60;
const CONCURRENCY = 30;
const ALIASES = 10;

export async function probeLimiter(url: string, secret: string, organization: BenchOrganization): Promise<LimiterProbe> {
  const token = await signToken(secret, 'bench-limiter-probe', 'member', organization.id);
  const fields = Array.from(
    { length: ALIASES },
    (_, index) => `m${index}: reserveCredits(input: $input) { __typename ... on InvalidInputError { field } }`,
  ).join('\n');
  const query = `mutation Probe($input: ReserveCreditsInput!) {\n${fields}\n}`;
  const input = { organizationId: organization.id, idempotencyKey: 'bench-limiter-probe', generation: { modelId: 'image-standard', resolution: 'HD_720P' }, ttlSeconds: 0 };
  const http = new GraphQLHttp(url, CONCURRENCY);
  const result: LimiterProbe = { requests: 0, mutationsPerRequest: ALIASES, accepted: 0, refused: 0, failures: { count: 0, samples: [] } };
  const fail = (detail: string) => {
    result.failures.count += 1;
    if (result.failures.samples.length < 5) result.failures.samples.push(`limiter probe: ${detail}`);
  };
  try {
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (result.refused === 0 && result.requests < REQUESTS_MAX) {
          result.requests += 1;
          try {
          const verdict = judge(await http.post(token, query, { input }), null, null);
          if (verdict.outcome === 'rateLimited') result.refused += 1;
          else if (verdict.outcome !== 'ok') fail(verdict.detail ?? verdict.outcome);
          else {
            const answers = Object.values(verdict.value as Record<string, { __typename?: string; field?: string }>);
            if (answers.length === ALIASES && answers.every((answer) => answer.__typename === 'InvalidInputError' && answer.field === 'ttlSeconds')) result.accepted += 1;
            else fail(`unexpected answer ${JSON.stringify(verdict.value).slice(0, 160)}`);
          }
          } catch (error) {
            fail(error instanceof Error ? error.message : String(error));
          }
        }
      }),
    );
  } finally {
    http.close();
  }
  return result;
}
