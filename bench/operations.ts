// The requests the load is made of, and the bookkeeping of what clients were told.
import { CAPTURE, GENERATION, type GraphQLHttp, REFUND, RESERVE, TYPENAME, judge, type Judged } from './graphql.ts';
import type { ScriptContext } from './load.ts';
import type { BenchOrganization } from './setup.ts';

/** Every reservation and capture a client was told succeeded, per database. */
export class Acknowledged {
  reservations = 0;
  capturedCredits = 0;
}

let keySequence = 0;

export class LedgerClient {
  constructor(
    readonly http: GraphQLHttp,
    private readonly acknowledged: Acknowledged,
    private readonly keyPrefix: string,
    private readonly ttlSeconds = 3_600,
  ) {}

  async reserve(organization: BenchOrganization): Promise<Judged> {
    const input = {
      organizationId: organization.id,
      idempotencyKey: `bench-${this.keyPrefix}-${(keySequence += 1)}`,
      generation: GENERATION,
      ttlSeconds: this.ttlSeconds,
    };
    const verdict = judge(
      await this.http.post(organization.serviceToken, RESERVE, { input }),
      'reserveCredits',
      'ReserveCreditsSuccess',
      ['InsufficientCreditsError'],
    );
    if (verdict.outcome === 'ok') this.acknowledged.reservations += 1;
    return verdict;
  }

  async capture(organization: BenchOrganization, reservationId: string): Promise<Judged> {
    const verdict = judge(
      await this.http.post(organization.serviceToken, CAPTURE, { id: reservationId }),
      'captureReservation',
      'CaptureReservationSuccess',
      ['ReservationStateError'],
    );
    if (verdict.outcome === 'ok') this.acknowledged.capturedCredits += Number(verdict.value.reservation.capturedAmount);
    return verdict;
  }

  async refund(organization: BenchOrganization, reservationId: string): Promise<Judged> {
    return judge(
      await this.http.post(organization.serviceToken, REFUND, { id: reservationId }),
      'refundReservation',
      'RefundReservationSuccess',
      ['ReservationStateError'],
    );
  }

  async typename(token: string): Promise<Judged> {
    return judge(await this.http.post(token, TYPENAME), null, null);
  }
}

/** A reservation and its capture; a rate-limited capture is retried while the phase runs. */
export async function reserveThenCapture(
  ctx: ScriptContext,
  ledger: LedgerClient,
  organization: BenchOrganization,
): Promise<void> {
  const reserved = await ctx.call('reserve', () => ledger.reserve(organization));
  if (reserved.outcome !== 'ok') return;
  const id = String(reserved.value.reservation.id);
  for (;;) {
    const captured = await ctx.call('capture', () => ledger.capture(organization, id));
    if (captured.outcome !== 'rateLimited' || !ctx.running()) return;
  }
}
