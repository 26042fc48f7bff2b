import type { LookupFunction } from 'node:net';
import type { Clock } from '../clock.ts';
import type { Db } from '../db/client.ts';
import type { DeliveredAlertEvent } from '../ledger/alerts.ts';
import {
  claimDelivery,
  findDueDeliveries,
  recordAttempt,
  type ClaimedDelivery,
  type RecordedAttempt,
} from '../ledger/webhook-deliveries.ts';
import { findOrganizationWebhook, signingSecrets } from '../ledger/webhooks.ts';
import type { WebhookAttemptOutcome } from '../server/metrics.ts';
import { exponentialBackoff, type RetrySchedule } from './backoff.ts';
import { sendWebhook, type AttemptOutcome } from './sender.ts';
import type { WebhookUrlPolicy } from './url-policy.ts';

export const ATTEMPT_TIMEOUT_MS = 10_000;
/** Attempts in flight at once in one process, over all organizations (each has at most one). */
export const ATTEMPTS_IN_FLIGHT_MAX = 64;
const POLL_INTERVAL_MS_DEFAULT = 1000;

export interface WebhookDispatcherOptions {
  db: Db;
  /** The ledger's clock: when events happened and when attempts are due. */
  clock: Clock;
  policy: WebhookUrlPolicy;
  /** Reads one committed event as it is delivered; null when it does not exist. */
  load(organizationId: string, eventId: string, at: Date): Promise<DeliveredAlertEvent | null>;
  /** How often due retries are looked for; null never (tests call `deliverDue`). Default 1 s. */
  pollIntervalMs?: number | null;
  attemptTimeoutMs?: number;
  attemptsInFlightMax?: number;
  retrySchedule?: RetrySchedule;
  /** Name resolution for receivers; dns.lookup unless a test stands in for the resolver. */
  lookup?: LookupFunction;
  /** Told of every finished attempt (the metrics). */
  onAttempt?: (outcome: WebhookAttemptOutcome, lagMs: number | null, gaveUp: boolean) => void;
  log?: (message: string, error?: unknown) => void;
}

export interface WebhookDispatcher {
  start(): void;
  /** Looks for due deliveries now (an alert event was committed somewhere). */
  wake(): void;
  /** Claims what is due now and waits for those attempts to finish (tests, and `credits webhooks retry`). */
  deliverDue(): Promise<void>;
  /** Stops looking, interrupts attempts in flight (recorded as failed, retried later) and waits for them. */
  stop(): Promise<void>;
}

/**
 * Sends due webhook deliveries from the database: woken when an alert event is announced and
 * polling for retries that came due. Each attempt runs on its own, with its own timeout, and an
 * organization has at most one in flight, so one receiver that hangs or fails holds up nothing
 * but its own organization's next delivery; the sweeper and the requests are not involved at all.
 * Any number of processes may run one: a delivery is claimed by a lease (see claimDelivery).
 */
export function createWebhookDispatcher(options: WebhookDispatcherOptions): WebhookDispatcher {
  const log = options.log ?? (() => {});
  const schedule = options.retrySchedule ?? exponentialBackoff();
  const timeoutMs = options.attemptTimeoutMs ?? ATTEMPT_TIMEOUT_MS;
  // The lease outlives the attempt's timeout, so it never ends while the attempt may still succeed.
  const leaseMs = timeoutMs + 20_000;
  const slotsMax = options.attemptsInFlightMax ?? ATTEMPTS_IN_FLIGHT_MAX;
  const inFlight = new Map<string, Promise<void>>();
  const stopping = new AbortController();
  let timer: NodeJS.Timeout | null = null;
  let scanning: Promise<void> | null = null;
  let scanAgain = false;

  function scan(): Promise<void> {
    if (stopping.signal.aborted) return Promise.resolve();
    if (scanning) {
      scanAgain = true;
      return scanning;
    }
    scanning = (async () => {
      try {
        do {
          scanAgain = false;
          await claimDue();
        } while (scanAgain && !stopping.signal.aborted);
      } catch (error) {
        log('looking for due webhook deliveries failed', error);
      } finally {
        scanning = null;
      }
    })();
    return scanning;
  }

  async function claimDue(): Promise<void> {
    const free = slotsMax - inFlight.size;
    if (free <= 0) return;
    const now = options.clock.now();
    const due = await findDueDeliveries(options.db, now, [...inFlight.keys()], free);
    for (const key of due) {
      if (stopping.signal.aborted || inFlight.has(key.organizationId)) continue;
      const claim = await claimDelivery(options.db, key, now, leaseMs);
      if (!claim) continue;
      const attempt = runAttempt(claim)
        .catch((error: unknown) => log(`webhook delivery of event ${claim.eventId} failed`, error))
        .finally(() => {
          inFlight.delete(claim.organizationId);
          // The organization's next delivery, or another that waited for a slot, may be due.
          void scan();
        });
      inFlight.set(claim.organizationId, attempt);
    }
    // A full batch may have left more behind.
    if (due.length >= free) scanAgain = true;
  }

  async function runAttempt(claim: ClaimedDelivery): Promise<void> {
    const [event, webhook] = await Promise.all([
      options.load(claim.organizationId, claim.eventId, options.clock.now()),
      findOrganizationWebhook(options.db, claim.organizationId),
    ]);
    if (!webhook || !event) {
      const error = webhook ? 'the event no longer exists' : 'the organization has no webhook';
      await record(claim, { kind: 'cancelled', error }, 'cancelled', null);
      return;
    }
    const outcome = await sendWebhook(
      {
        url: webhook.url,
        id: event.id,
        body: alertEventBody(event),
        secrets: signingSecrets(webhook, options.clock.now()),
      },
      { policy: options.policy, timeoutMs, lookup: options.lookup, signal: stopping.signal },
    );
    await record(claim, recordedAttempt(claim, outcome), outcome.kind, event.occurredAt);
  }

  function recordedAttempt(claim: ClaimedDelivery, outcome: AttemptOutcome): RecordedAttempt {
    if (outcome.kind === 'delivered') return outcome;
    const now = options.clock.now();
    // An attempt cut short by this process stopping is tried again soon, by whichever process is up.
    const nextAttemptAt = stopping.signal.aborted
      ? now
      : claim.attempt >= schedule.attemptsMax
        ? null
        : new Date(now.getTime() + schedule.delayMs(claim.attempt));
    const status = outcome.kind === 'rejected' ? outcome.status : null;
    return { kind: 'failed', status, error: outcome.error, nextAttemptAt };
  }

  async function record(
    claim: ClaimedDelivery,
    attempt: RecordedAttempt,
    outcome: WebhookAttemptOutcome,
    occurredAt: Date | null,
  ): Promise<void> {
    const now = options.clock.now();
    const recorded = await recordAttempt(options.db, claim, attempt, now);
    if (!recorded) return;
    const lagMs = attempt.kind === 'delivered' && occurredAt ? now.getTime() - occurredAt.getTime() : null;
    const gaveUp = attempt.kind === 'failed' && attempt.nextAttemptAt === null;
    options.onAttempt?.(outcome, lagMs, gaveUp);
    if (gaveUp)
      log(`webhook delivery of event ${claim.eventId} failed after ${claim.attempt} attempts: ${attempt.error}`);
  }

  return {
    start() {
      if (timer || stopping.signal.aborted) return;
      const intervalMs = options.pollIntervalMs === undefined ? POLL_INTERVAL_MS_DEFAULT : options.pollIntervalMs;
      if (intervalMs !== null) {
        timer = setInterval(() => void scan(), intervalMs);
        timer.unref();
      }
      void scan();
    },
    wake() {
      void scan();
    },
    async deliverDue() {
      await scan();
      await Promise.all(inFlight.values());
    },
    async stop() {
      if (timer) clearInterval(timer);
      timer = null;
      stopping.abort();
      await scanning;
      await Promise.all(inFlight.values());
    },
  };
}

/**
 * The body of a `balance.alert` delivery, in the Standard Webhooks shape (`type`, `timestamp`,
 * `data`) with the event id beside them.
 */
export function alertEventBody(event: DeliveredAlertEvent): string {
  return JSON.stringify({
    id: event.id,
    type: 'balance.alert',
    timestamp: event.occurredAt.toISOString(),
    data: {
      organizationId: event.organizationId,
      alertId: event.alertId,
      threshold: event.threshold,
      available: event.available,
      generationsLeft: event.generationsLeft,
      modelId: event.modelId,
      occurredAt: event.occurredAt.toISOString(),
    },
  });
}
