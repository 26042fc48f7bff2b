import { and, inArray } from 'drizzle-orm';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Db } from '../db/client.ts';
import { creditLots } from '../db/schema.ts';
import type { EntryDraft } from '../ledger/journal.ts';
import type { SweepResult } from '../ledger/sweeper.ts';
import { EXPIRED_REFUND_REASON } from '../ledger/reservations.ts';
import type { NotifierStats } from '../realtime/balance-notifier.ts';

/**
 * A label whose values come from outside (operation names, error codes): each value is cut to
 * `lengthMax` characters, and once `distinctMax` values have been seen every new one counts as
 * "other". Without the cap a client could create a time series per request by naming each
 * operation differently, and the scrape (and Prometheus) would grow without bound.
 */
export class BoundedLabel {
  readonly #seen = new Set<string>();
  constructor(
    private readonly distinctMax: number,
    private readonly lengthMax = 64,
  ) {}

  value(raw: string): string {
    const cut = raw.slice(0, this.lengthMax);
    if (this.#seen.has(cut)) return cut;
    if (this.#seen.size >= this.distinctMax) return 'other';
    this.#seen.add(cut);
    return cut;
  }
}

export type Transport = 'http' | 'sse' | 'ws';

export const WEBHOOK_ATTEMPT_OUTCOMES = [
  'delivered',
  'rejected',
  'timeout',
  'unreachable',
  'forbidden_address',
  'cancelled',
] as const;
export type WebhookAttemptOutcome = (typeof WEBHOOK_ATTEMPT_OUTCOMES)[number];
export type OperationType = 'query' | 'mutation' | 'subscription' | 'unknown';

/** Where the metrics read state they do not count themselves (pool, listener, database health). */
export interface MetricsSources {
  db: Db;
  poolStats?: () => { size: number; active: number; waiting: number };
  notifierStats?: () => NotifierStats;
  databaseAvailable?: () => boolean;
}

const OPERATION_NAMES_MAX = 100;
const OUTCOMES_MAX = 50;
const LOT_TYPES_CACHED_MAX = 10_000;
const PENDING_LOTS_MAX = 10_000;

/**
 * The service's Prometheus metrics, in a registry of its own (several apps may share a process in
 * tests). Label values are bounded: operation names only of operations that parsed and validated,
 * cut and capped (see BoundedLabel); outcomes are result type names and error codes, capped the
 * same way; every other label takes values from a fixed list. No organization id, no free text.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly #operationName = new BoundedLabel(OPERATION_NAMES_MAX);
  readonly #outcome = new BoundedLabel(OUTCOMES_MAX);
  readonly #sources: MetricsSources;
  #lastSweepAt: number | null = null;

  readonly operations: Counter<'operation' | 'type' | 'outcome'>;
  readonly operationSeconds: Histogram<'operation' | 'type'>;
  readonly reservations: Counter<'outcome' | 'reason'>;
  readonly credits: Counter<'movement' | 'account_type'>;
  readonly sweeperRuns: Counter;
  readonly sweeperSeconds: Histogram;
  readonly sweeperItems: Counter<'kind'>;
  readonly sweeperFailures: Counter<'scope'>;
  readonly subscriptions: Gauge<'transport'>;
  readonly alertsFired: Counter;
  readonly webhookAttempts: Counter<'outcome'>;
  readonly webhookDeliveryLag: Histogram;
  readonly webhookDeliveriesFailed: Counter;
  readonly #movements: CreditMovements;

  /**
   * Adds the process metrics (CPU, memory, event loop delay, GC). Not done on construction:
   * prom-client starts sampling the event loop and observing GC for them, for good, so only a
   * started app does it, once.
   */
  collectProcessMetrics(): void {
    collectDefaultMetrics({ register: this.registry });
  }

  constructor(sources: MetricsSources) {
    this.#sources = sources;
    const registers = [this.registry];
    this.operations = new Counter({
      name: 'credits_graphql_operations_total',
      help: 'GraphQL operations executed, by operation name, type and outcome (success, a typed error, or an error code).',
      labelNames: ['operation', 'type', 'outcome'],
      registers,
    });
    this.operationSeconds = new Histogram({
      name: 'credits_graphql_operation_duration_seconds',
      help: 'Time to execute a GraphQL operation (for a subscription, until its first result).',
      labelNames: ['operation', 'type'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.reservations = new Counter({
      name: 'credits_reservations_total',
      help: 'Reservations by outcome: reserved, insufficient, captured, partially_captured, refunded (reason requested or expired).',
      labelNames: ['outcome', 'reason'],
      registers,
    });
    const resolveMovements = () => this.#movements.resolve();
    this.credits = new Counter({
      name: 'credits_moved_total',
      help: 'Credits moved by committed journal entries, by movement (granted, reserved, captured, refunded, expired) and account type.',
      labelNames: ['movement', 'account_type'],
      registers,
      collect: resolveMovements,
    });
    this.#movements = new CreditMovements(sources.db, this.credits);
    this.sweeperRuns = new Counter({ name: 'credits_sweeper_runs_total', help: 'Completed sweeper runs.', registers });
    this.sweeperSeconds = new Histogram({
      name: 'credits_sweeper_run_duration_seconds',
      help: 'Duration of a completed sweeper run.',
      buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60],
      registers,
    });
    this.sweeperItems = new Counter({
      name: 'credits_sweeper_items_total',
      help: 'Work the sweeper did, by kind: reservation-refund (expired reservations refunded), cycle-reset, lot-expiry.',
      labelNames: ['kind'],
      registers,
    });
    this.sweeperFailures = new Counter({
      name: 'credits_sweeper_failures_total',
      help: 'Sweeper failures: scope "run" when a whole run failed (say, the database is down), "item" for one item (retried with backoff).',
      labelNames: ['scope'],
      registers,
    });
    const lastSweep = () => this.#lastSweepAt;
    new Gauge({
      name: 'credits_sweeper_lag_seconds',
      help: 'Seconds since the sweeper last completed a run (grows when it is stuck or failing).',
      registers,
      collect() {
        const at = lastSweep();
        if (at !== null) this.set((Date.now() - at) / 1000);
      },
    });
    this.subscriptions = new Gauge({
      name: 'credits_subscriptions_open',
      help: 'Open GraphQL subscriptions, by transport (sse, ws).',
      labelNames: ['transport'],
      registers,
    });
    this.subscriptions.set({ transport: 'sse' }, 0);
    this.subscriptions.set({ transport: 'ws' }, 0);
    this.alertsFired = new Counter({
      name: 'credits_balance_alerts_fired_total',
      help: 'Balance alert events written by committed changes made by this process (one per threshold crossing).',
      registers,
    });
    this.webhookAttempts = new Counter({
      name: 'credits_webhook_delivery_attempts_total',
      help: 'Webhook delivery attempts made by this process, by outcome: delivered (2xx), rejected (any other status), timeout, unreachable, forbidden_address, cancelled.',
      labelNames: ['outcome'],
      registers,
    });
    for (const outcome of WEBHOOK_ATTEMPT_OUTCOMES) this.webhookAttempts.inc({ outcome }, 0);
    this.webhookDeliveryLag = new Histogram({
      name: 'credits_webhook_delivery_lag_seconds',
      help: 'From the alert event to its successful delivery, retries included.',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400],
      registers,
    });
    this.webhookDeliveriesFailed = new Counter({
      name: 'credits_webhook_deliveries_failed_total',
      help: 'Webhook deliveries given up after their last attempt (see webhookDeliveries, or `credits webhooks list`).',
      registers,
    });
    this.#sourceMetrics(registers);
  }

  #sourceMetrics(registers: Registry[]): void {
    const { poolStats, notifierStats, databaseAvailable } = this.#sources;
    if (poolStats) {
      gaugeOf(registers, 'credits_db_pool_size', 'Connections the database pool may open.', () => poolStats().size);
      gaugeOf(
        registers,
        'credits_db_pool_active',
        'Statements and transactions running on pooled connections.',
        () => poolStats().active,
      );
      gaugeOf(
        registers,
        'credits_db_waiting_queries',
        'Statements and transactions waiting for a pooled connection.',
        () => poolStats().waiting,
      );
    }
    if (notifierStats) {
      counterOf(
        registers,
        'credits_listener_reconnects_total',
        'Times the balance listener started listening again after its first start (a reconnect or a watchdog restart).',
        () => Math.max(0, notifierStats().listens - 1),
      );
      counterOf(
        registers,
        'credits_listener_restarts_total',
        'Times the watchdog replaced a listener that stopped hearing its channel.',
        () => notifierStats().restarts,
      );
    }
    if (databaseAvailable) {
      gaugeOf(
        registers,
        'credits_database_up',
        '1 while the database answers, 0 while requests are refused because it cannot be reached.',
        () => (databaseAvailable() ? 1 : 0),
      );
    }
  }

  operationName(name: string | undefined): string {
    return name ? this.#operationName.value(name) : 'anonymous';
  }

  operation(name: string, type: OperationType, outcome: string, seconds: number | null): void {
    this.operations.inc({ operation: name, type, outcome: this.#outcome.value(outcome) });
    if (seconds !== null) this.operationSeconds.observe({ operation: name, type }, seconds);
  }

  insufficientReservations(count: number): void {
    if (count > 0) this.reservations.inc({ outcome: 'insufficient', reason: '' }, count);
  }

  sweeperRun(result: SweepResult, durationMs: number): void {
    this.#lastSweepAt = Date.now();
    this.sweeperRuns.inc();
    this.sweeperSeconds.observe(durationMs / 1000);
    this.sweeperItems.inc({ kind: 'reservation-refund' }, result.refundedReservations);
    this.sweeperItems.inc({ kind: 'cycle-reset' }, result.resetOrganizations);
    this.sweeperItems.inc({ kind: 'lot-expiry' }, result.expiredLotOrganizations);
  }

  /** Committed movements of this service's database (src/ledger/movements.ts). */
  /** One finished webhook attempt; `lagMs` when it delivered, `gaveUp` when it was the last. */
  webhookAttempt(outcome: WebhookAttemptOutcome, lagMs: number | null, gaveUp: boolean): void {
    this.webhookAttempts.inc({ outcome });
    if (lagMs !== null) this.webhookDeliveryLag.observe(Math.max(0, lagMs) / 1000);
    if (gaveUp) this.webhookDeliveriesFailed.inc();
  }

  movements(db: Db, drafts: readonly EntryDraft[]): void {
    if (db !== this.#sources.db) return;
    this.#countReservations(drafts);
    this.#movements.record(drafts);
  }

  #countReservations(drafts: readonly EntryDraft[]): void {
    const kinds = new Map<string, { reserve: boolean; capture: boolean; refund: boolean; reason: string | null }>();
    for (const draft of drafts) {
      if (!draft.reservationId) continue;
      const seen = kinds.get(draft.reservationId) ?? { reserve: false, capture: false, refund: false, reason: null };
      if (draft.kind === 'RESERVE') seen.reserve = true;
      if (draft.kind === 'CAPTURE') seen.capture = true;
      if (draft.kind === 'REFUND') {
        seen.refund = true;
        seen.reason = draft.reason ?? null;
      }
      kinds.set(draft.reservationId, seen);
    }
    for (const seen of kinds.values()) {
      if (seen.reserve) this.reservations.inc({ outcome: 'reserved', reason: '' });
      else if (seen.capture)
        this.reservations.inc({ outcome: seen.refund ? 'partially_captured' : 'captured', reason: '' });
      else if (seen.refund) {
        this.reservations.inc({
          outcome: 'refunded',
          reason: seen.reason === EXPIRED_REFUND_REASON ? 'expired' : 'requested',
        });
      }
    }
  }
}

function movementOf(draft: EntryDraft): [string, number] {
  switch (draft.kind) {
    case 'GRANT':
      return ['granted', draft.availableChange];
    case 'RESERVE':
      return ['reserved', draft.reservedChange];
    case 'CAPTURE':
      return ['captured', -draft.reservedChange];
    case 'REFUND':
      return ['refunded', draft.availableChange];
    case 'EXPIRE':
      return ['expired', -draft.availableChange];
  }
}

/**
 * Credits moved, by account type. The journal's entries name their lot, not its type, and a
 * lot's type never changes; so a movement of a lot whose type is known is counted at once, and
 * the others wait for the next scrape, which reads the types of all their lots in one statement
 * (filtered by organization) and remembers them. Nothing is read on a request's path: an
 * organization spends from few lots, so after the first scrape almost every movement is counted
 * at once.
 */
class CreditMovements {
  readonly #types = new Map<string, string>();
  readonly #pending = new Map<string, { organizationId: string; amounts: Map<string, number> }>();

  constructor(
    private readonly db: Db,
    private readonly counter: Counter<'movement' | 'account_type'>,
  ) {}

  record(drafts: readonly EntryDraft[]): void {
    for (const draft of drafts) {
      const [movement, amount] = movementOf(draft);
      const type = this.#types.get(draft.lotId);
      if (type) {
        this.counter.inc({ movement, account_type: type }, amount);
        continue;
      }
      let pending = this.#pending.get(draft.lotId);
      if (!pending) {
        // Past the bound (a scrape long overdue), credits are counted as of unknown type.
        if (this.#pending.size >= PENDING_LOTS_MAX) {
          this.counter.inc({ movement, account_type: 'unknown' }, amount);
          continue;
        }
        pending = { organizationId: draft.organizationId, amounts: new Map() };
        this.#pending.set(draft.lotId, pending);
      }
      pending.amounts.set(movement, (pending.amounts.get(movement) ?? 0) + amount);
    }
  }

  /** Called by each scrape: reads the types of the lots still waiting, and counts their credits. */
  async resolve(): Promise<void> {
    if (this.#pending.size === 0) return;
    const lots = [...this.#pending];
    this.#pending.clear();
    try {
      const rows = await this.db
        .select({ id: creditLots.id, type: creditLots.type })
        .from(creditLots)
        .where(
          and(
            inArray(creditLots.organizationId, [...new Set(lots.map(([, lot]) => lot.organizationId))]),
            inArray(
              creditLots.id,
              lots.map(([id]) => id),
            ),
          ),
        );
      for (const row of rows) this.#remember(row.id, row.type);
    } catch {
      // The database is unreachable: these credits are counted as of unknown type rather than
      // kept waiting for a database that may not come back soon.
    }
    for (const [id, lot] of lots) {
      const type = this.#types.get(id) ?? 'unknown';
      for (const [movement, amount] of lot.amounts) this.counter.inc({ movement, account_type: type }, amount);
    }
  }

  #remember(id: string, type: string): void {
    if (this.#types.size >= LOT_TYPES_CACHED_MAX) this.#types.delete(this.#types.keys().next().value!);
    this.#types.set(id, type);
  }
}

/** A gauge whose value lives elsewhere: `read` is asked for it whenever /metrics is scraped. */
function gaugeOf(registers: Registry[], name: string, help: string, read: () => number): void {
  new Gauge({
    name,
    help,
    registers,
    collect() {
      this.set(read());
    },
  });
}

/**
 * A counter whose total is kept elsewhere (by the notifier): `read` is asked for it whenever
 * /metrics is scraped, and the counter shows that total as it is.
 */
function counterOf(registers: Registry[], name: string, help: string, read: () => number): void {
  new Counter({
    name,
    help,
    registers,
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}
