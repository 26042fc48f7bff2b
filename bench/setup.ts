// Organizations and credits, made through the GraphQL API as an admin would make them.
import { CREATE_ORGANIZATION, GRANT, GraphQLHttp, mustSucceed } from './graphql.ts';
import { signToken } from './tokens.ts';

export interface BenchOrganization {
  id: string;
  /** The one service token of this organization, as a generation backend holds it. */
  serviceToken: string;
}

/** Far more than any run spends (4 credits a reservation), and under the 2,000,000,000 cap. */
export const CREDITS_PER_ORGANIZATION = 1_000_000_000;

export async function createOrganizations(
  url: string,
  secret: string,
  count: number,
  label: string,
): Promise<BenchOrganization[]> {
  const admin = await signToken(secret, 'bench-admin', 'admin');
  const client = new GraphQLHttp(url, 8);
  try {
    const organizations: BenchOrganization[] = new Array(count);
    let next = 0;
    const worker = async () => {
      for (let index = next++; index < count; index = next++) {
        const created = await mustSucceed(
          client,
          admin,
          CREATE_ORGANIZATION,
          { input: { name: `bench ${label} ${index}`, planId: 'pro' } },
          'createOrganization',
          'CreateOrganizationSuccess',
        );
        const id = String(created.organization.id);
        await mustSucceed(
          client,
          admin,
          GRANT,
          {
            input: {
              organizationId: id,
              type: 'PURCHASED',
              amount: CREDITS_PER_ORGANIZATION,
              reason: 'bench credits',
              idempotencyKey: `bench-grant-${label}-${index}`,
            },
          },
          'grantCredits',
          'GrantCreditsSuccess',
        );
        organizations[index] = {
          id,
          serviceToken: await signToken(secret, `bench-backend-${label}-${index}`, 'service', id),
        };
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    return organizations;
  } finally {
    client.close();
  }
}
