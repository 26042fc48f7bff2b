import { asc, eq } from 'drizzle-orm';
import { expect } from 'vitest';
import { balanceAlertEvents } from '../../src/db/schema.ts';
import type { TestApp } from './app.ts';
import { ERROR_FIELDS } from './operations.ts';
import { expectSuccess, uniqueKey, type TestOrganization } from './scenario.ts';

export const SET_ALERT = `
  mutation ($input: SetBalanceAlertInput!) {
    setBalanceAlert(input: $input) { ${ERROR_FIELDS} ... on SetBalanceAlertSuccess { alert { id threshold armed lastFiredAt } } }
  }`;

/** Sets an alert as the organization's service and returns it. */
export async function setAlert(t: TestApp, org: TestOrganization, threshold: number, key = uniqueKey('alert')) {
  const result = await t.gql(
    SET_ALERT,
    { input: { organizationId: org.id, threshold, idempotencyKey: key } },
    org.service,
  );
  expect(result.errors).toBeUndefined();
  return expectSuccess(result.data.setBalanceAlert, 'SetBalanceAlertSuccess').alert;
}

/** The outbox rows of the organization, oldest first. */
export async function eventsOf(t: TestApp, organizationId: string) {
  return t.database.db
    .select()
    .from(balanceAlertEvents)
    .where(eq(balanceAlertEvents.organizationId, organizationId))
    .orderBy(asc(balanceAlertEvents.occurredAt), asc(balanceAlertEvents.available));
}
