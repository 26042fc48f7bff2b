// The reservation life cycle over real HTTP: the app listens on a local port (as `npm start` does
// through `app.listen`) and every operation below, set-up included, is sent with fetch over a
// socket, through Node's HTTP parser and the app's own `http.Server`, not `yoga.fetch` in process.
import { describe, expect } from 'vitest';
import { it, listenOverHttp, useTestApp, type TestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { CAPTURE, REFUND } from '../support/operations.ts';
import { balanceOf, grant, newOrganization, reserve, textCredits } from '../support/scenario.ts';

describe.each(drivers)('reserve, capture and refund over a listening HTTP server (%s)', (driver) => {
  const block = useTestApp(driver);
  let http: TestApp;
  let url: string;

  it.beforeAll(async ({ testApps }) => {
    ({ client: http, url } = await listenOverHttp(await testApps.open(block)));
  });

  it('answers on a real port', async () => {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: '{ plans { id } }' }),
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { errors?: Array<{ extensions?: { code?: string } }> };
    expect(body.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
  });

  it('reserves, captures part, refunds, and reports the balance after each step', async () => {
    const org = await newOrganization(http); // 100 subscription credits
    await grant(http, org, 'PURCHASED', 50);
    expect(await balanceOf(http, org)).toMatchObject({ available: 150, reserved: 0 });

    const first = await reserve(http, org, textCredits(120));
    expect(first.reservation).toMatchObject({ status: 'PENDING', amount: 120 });
    expect(first.balance).toMatchObject({ available: 30, reserved: 120 });
    expect(await balanceOf(http, org)).toMatchObject({ available: 30, reserved: 120 });

    const captured = await http.gql(
      CAPTURE,
      { input: { reservationId: first.reservation.id, amount: 100 } },
      org.service,
    );
    expect(captured.status).toBe(200);
    expect(captured.errors).toBeUndefined();
    expect(captured.data.captureReservation).toMatchObject({
      __typename: 'CaptureReservationSuccess',
      reservation: { status: 'CAPTURED', capturedAmount: 100, refundedAmount: 20 },
      balance: { available: 50, reserved: 0 },
    });

    const second = await reserve(http, org, textCredits(40));
    expect(await balanceOf(http, org)).toMatchObject({ available: 10, reserved: 40 });
    const refunded = await http.gql(
      REFUND,
      { input: { reservationId: second.reservation.id, reason: 'generation failed' } },
      org.service,
    );
    expect(refunded.status).toBe(200);
    expect(refunded.errors).toBeUndefined();
    expect(refunded.data.refundReservation).toMatchObject({
      __typename: 'RefundReservationSuccess',
      reservation: { status: 'REFUNDED', capturedAmount: 0, refundedAmount: 40 },
      balance: { available: 50, reserved: 0 },
    });

    const balance = await balanceOf(http, org);
    expect(balance).toMatchObject({ available: 50, reserved: 0 });
    expect(balance.accounts.map((account: any) => [account.type, account.available])).toEqual([
      ['SUBSCRIPTION', 0],
      ['PURCHASED', 50],
      ['PROMOTIONAL', 0],
      ['REFERRAL', 0],
    ]);
  });
});
