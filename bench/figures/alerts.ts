// Figure 8: what watching balances costs the hot path. Every posting evaluates its organization's
// low-balance alerts inside its own statement; with alerts, that means summing the spendable lots.
// Reserves/s over the same organizations with 10 alerts each (armed, set far below the balance, so
// none fires and each is evaluated on every reserve) ÷ right before, without.
import { GraphQLHttp, mustSucceed } from '../graphql.ts';
import type { Acknowledged } from '../operations.ts';
import type { Window } from '../load.ts';
import type { PhaseResult } from '../load.ts';
import type { RunningServer } from '../server.ts';
import type { BenchOrganization } from '../setup.ts';
import { signToken } from '../tokens.ts';
import { spreadReserves } from './ledger.ts';

export const ALERTS_PER_ORGANIZATION = 10;

const SET_ALERT = `mutation SetAlert($input: SetBalanceAlertInput!) {
  setBalanceAlert(input: $input) { __typename ... on SetBalanceAlertSuccess { alert { id armed } } ... on Error { message } }
}`;

const REMOVE_ALERT = `mutation RemoveAlert($id: ID!) {
  removeBalanceAlert(input: { alertId: $id }) { __typename ... on Error { message } }
}`;

export interface AlertsResult {
  without: PhaseResult;
  with: PhaseResult;
}

export async function reservesWithAlerts(
  server: RunningServer,
  secret: string,
  organizations: BenchOrganization[],
  clients: number,
  window: Window,
  acknowledged: Acknowledged,
  label: string,
): Promise<AlertsResult> {
  const without = await spreadReserves(server, organizations, clients, window, acknowledged, `${label} no alerts`);
  const alertIds = await setAlerts(server.url, secret, organizations, label);
  try {
    const withAlerts = await spreadReserves(
      server,
      organizations,
      clients,
      window,
      acknowledged,
      `${label} with ${ALERTS_PER_ORGANIZATION} alerts per org`,
    );
    return { without, with: withAlerts };
  } finally {
    // The later figures measure the organizations as they were.
    await removeAlerts(server.url, secret, alertIds);
  }
}

/** Thresholds 1,000 to 10,000 credits: armed, far below the balance, never crossed by the bench. */
async function setAlerts(url: string, secret: string, organizations: BenchOrganization[], label: string) {
  const admin = await signToken(secret, 'bench-admin', 'admin');
  const client = new GraphQLHttp(url, 8);
  const ids: string[] = [];
  try {
    const work = organizations.flatMap((organization, o) =>
      Array.from({ length: ALERTS_PER_ORGANIZATION }, (_, a) => ({ organization, o, a })),
    );
    let next = 0;
    const worker = async () => {
      for (let index = next++; index < work.length; index = next++) {
        const { organization, o, a } = work[index]!;
        const result = await mustSucceed(
          client,
          admin,
          SET_ALERT,
          {
            input: {
              organizationId: organization.id,
              threshold: (a + 1) * 1000,
              idempotencyKey: `bench-alert-${label}-${o}-${a}`,
            },
          },
          'setBalanceAlert',
          'SetBalanceAlertSuccess',
        );
        if (!result.alert.armed) throw new Error(`set-up setBalanceAlert: alert of ${organization.id} is not armed`);
        ids.push(String(result.alert.id));
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    return ids;
  } finally {
    client.close();
  }
}

async function removeAlerts(url: string, secret: string, ids: string[]) {
  const admin = await signToken(secret, 'bench-admin', 'admin');
  const client = new GraphQLHttp(url, 8);
  try {
    let next = 0;
    const worker = async () => {
      for (let index = next++; index < ids.length; index = next++) {
        await mustSucceed(client, admin, REMOVE_ALERT, { id: ids[index] }, 'removeBalanceAlert', 'RemoveBalanceAlertSuccess');
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
  } finally {
    client.close();
  }
}
