import { and, asc, eq, gt, lte, notInArray } from 'drizzle-orm';
import { creditLots, organizations, reservations } from '../db/schema.ts';
import type { LedgerContext } from './context.ts';
import { expireDueLots } from './lots.ts';
import { bumpBalanceVersion } from './announcements.ts';
import { ensureCurrentCycle, lockOrganization } from './organizations.ts';
import { refundIfExpired } from './settlements.ts';
import { inOrganizationTransaction } from './organization-queue.ts';

const BATCH_SIZE = 100;
/** A bound on one catch-up: enough for 100 batches of each kind; the next tick resumes the rest. */
const PASSES_MAX = 100;
const BACKOFF_BASE_MS = 1_000;
const BACKOFF_MAX_MS = 5 * 60_000;
/** Items remembered as failing; past this the oldest is forgotten (and simply tried again). */
const FAILING_ITEMS_MAX = 1_000;

export type SweepItemKind = 'reservation-refund' | 'cycle-reset' | 'lot-expiry';

/** One unit of due work: a reservation to refund, or an organization to reset or expire lots of. */
export interface SweepItem {
  kind: SweepItemKind;
  id: string;
}

export interface SweepResult {
  refundedReservations: number;
  resetOrganizations: number;
  expiredLotOrganizations: number;
  /** Items that threw this time; each waits out a growing delay before it is tried again. */
  failedItems: number;
}

/**
 * Remembers items that failed, so that one item that fails every time is retried later with a
 * growing delay instead of being picked first by every pass and crowding out the rest. Delays are
 * measured on the ledger's clock, like every other time rule.
 */
export class SweepBackoff {
  readonly #failing = new Map<string, { failures: number; retryAtMs: number }>();

  /** Ids of this kind that must not be tried at `nowMs`. */
  waiting(kind: SweepItemKind, nowMs: number): string[] {
    const ids: string[] = [];
    for (const [key, state] of this.#failing) {
      const [itemKind, id] = splitKey(key);
      if (itemKind === kind && state.retryAtMs > nowMs) ids.push(id);
    }
    return ids;
  }

  failed(item: SweepItem, nowMs: number): number {
    const key = `${item.kind}:${item.id}`;
    const failures = (this.#failing.get(key)?.failures ?? 0) + 1;
    const delayMs = Math.min(BACKOFF_BASE_MS * 2 ** (failures - 1), BACKOFF_MAX_MS);
    this.#failing.delete(key);
    this.#failing.set(key, { failures, retryAtMs: nowMs + delayMs });
    if (this.#failing.size > FAILING_ITEMS_MAX) this.#failing.delete(this.#failing.keys().next().value!);
    return failures;
  }

  succeeded(item: SweepItem): void {
    this.#failing.delete(`${item.kind}:${item.id}`);
  }
}

function splitKey(key: string): [SweepItemKind, string] {
  const at = key.indexOf(':');
  return [key.slice(0, at) as SweepItemKind, key.slice(at + 1)];
}

export interface SweepOptions {
  backoff?: SweepBackoff;
  /** Told of every item that failed; the pass goes on with the next item. */
  onItemError?: (item: SweepItem, error: unknown, failures: number) => void;
}

/**
 * One pass of the housekeeping that keeps "you never lose credits" true without any client:
 * refunds reservations whose time to live passed, starts due billing cycles, and expires lots.
 * Each item runs in its own transaction under its organization's lock and re-checks its state
 * there, so several processes sweeping at once do each thing exactly once; an item that fails is
 * reported and skipped, and never stops the items behind it.
 */
export async function sweepOnce(ctx: LedgerContext, options: SweepOptions = {}): Promise<SweepResult> {
  const backoff = options.backoff ?? new SweepBackoff();
  const nowMs = ctx.clock.now().getTime();
  const result: SweepResult = {
    refundedReservations: 0,
    resetOrganizations: 0,
    expiredLotOrganizations: 0,
    failedItems: 0,
  };

  const run = async (item: SweepItem, work: () => Promise<boolean>): Promise<boolean> => {
    try {
      const done = await work();
      backoff.succeeded(item);
      return done;
    } catch (error) {
      result.failedItems += 1;
      options.onItemError?.(item, error, backoff.failed(item, nowMs));
      return false;
    }
  };

  for (const { id, organizationId } of await dueReservations(
    ctx,
    nowMs,
    backoff.waiting('reservation-refund', nowMs),
  )) {
    if (await run({ kind: 'reservation-refund', id }, () => refundIfExpired(ctx, id, organizationId)))
      result.refundedReservations += 1;
  }
  for (const id of await dueCycles(ctx, nowMs, backoff.waiting('cycle-reset', nowMs))) {
    if (await run({ kind: 'cycle-reset', id }, () => resetCycle(ctx, id))) result.resetOrganizations += 1;
  }
  for (const id of await dueLotOrganizations(ctx, nowMs, backoff.waiting('lot-expiry', nowMs))) {
    if (await run({ kind: 'lot-expiry', id }, () => expireLotsOf(ctx, id))) result.expiredLotOrganizations += 1;
  }
  return result;
}

// Finding due work reads every organization: on Citus each of these runs on all shards in
// parallel and locks nothing. The work itself then runs one organization per transaction.

async function dueReservations(
  ctx: LedgerContext,
  nowMs: number,
  skip: string[],
): Promise<Array<{ id: string; organizationId: string }>> {
  return ctx.db
    .select({ id: reservations.id, organizationId: reservations.organizationId })
    .from(reservations)
    .where(
      and(
        eq(reservations.status, 'PENDING'),
        lte(reservations.expiresAt, new Date(nowMs)),
        skip.length > 0 ? notInArray(reservations.id, skip) : undefined,
      ),
    )
    .orderBy(asc(reservations.expiresAt))
    .limit(BATCH_SIZE);
}

async function dueCycles(ctx: LedgerContext, nowMs: number, skip: string[]): Promise<string[]> {
  const rows = await ctx.db
    .select({ id: organizations.id })
    .from(organizations)
    .where(
      and(
        lte(organizations.cycleEndsAt, new Date(nowMs)),
        skip.length > 0 ? notInArray(organizations.id, skip) : undefined,
      ),
    )
    .orderBy(asc(organizations.cycleEndsAt))
    .limit(BATCH_SIZE);
  return rows.map((row) => row.id);
}

async function dueLotOrganizations(ctx: LedgerContext, nowMs: number, skip: string[]): Promise<string[]> {
  const rows = await ctx.db
    .selectDistinct({ id: creditLots.organizationId })
    .from(creditLots)
    .where(
      and(
        gt(creditLots.available, 0),
        lte(creditLots.expiresAt, new Date(nowMs)),
        skip.length > 0 ? notInArray(creditLots.organizationId, skip) : undefined,
      ),
    )
    .limit(BATCH_SIZE);
  return rows.map((row) => row.id);
}

/** Starts the organization's billing cycle that contains now, if its current one has ended; false when none was due. */
export function resetCycle(ctx: LedgerContext, organizationId: string): Promise<boolean> {
  return inOrganizationTransaction(ctx.db, organizationId, async (tx) => {
    const org = await lockOrganization(tx, organizationId);
    return org ? (await ensureCurrentCycle(tx, org, ctx.clock.now())).changed : false;
  });
}

function expireLotsOf(ctx: LedgerContext, organizationId: string): Promise<boolean> {
  return inOrganizationTransaction(ctx.db, organizationId, async (tx) => {
    if (!(await lockOrganization(tx, organizationId))) return false;
    const count = await expireDueLots(tx, organizationId, ctx.clock.now());
    if (count > 0) await bumpBalanceVersion(tx, organizationId);
    return count > 0;
  });
}

/**
 * Sweeps until a pass finds nothing to do, or for at most `PASSES_MAX` passes (the next call
 * resumes where this one stopped). Items that keep failing do not count as work, so a failing
 * item cannot keep this loop alive.
 */
export async function sweepUntilIdle(ctx: LedgerContext, options: SweepOptions = {}): Promise<SweepResult> {
  const backoff = options.backoff ?? new SweepBackoff();
  const total: SweepResult = {
    refundedReservations: 0,
    resetOrganizations: 0,
    expiredLotOrganizations: 0,
    failedItems: 0,
  };
  for (let pass = 0; pass < PASSES_MAX; pass += 1) {
    const result = await sweepOnce(ctx, { ...options, backoff });
    total.refundedReservations += result.refundedReservations;
    total.resetOrganizations += result.resetOrganizations;
    total.expiredLotOrganizations += result.expiredLotOrganizations;
    total.failedItems += result.failedItems;
    if (result.refundedReservations + result.resetOrganizations + result.expiredLotOrganizations === 0) break;
  }
  return total;
}

export interface Sweeper {
  stop(): Promise<void>;
}

/**
 * Runs a sweep every `intervalMs`; passes never overlap. Failing items are reported through
 * `onItemError` and retried with backoff across ticks; a pass that fails as a whole (say, the
 * database is down) goes to `onError` and is retried at the next tick.
 */
export function startSweeper(
  ctx: LedgerContext,
  intervalMs: number,
  onError: (error: unknown) => void,
  onItemError?: SweepOptions['onItemError'],
  /** Told of every completed run: what it did and how long it took (metrics, logs). */
  onRun?: (result: SweepResult, durationMs: number) => void,
): Sweeper {
  const backoff = new SweepBackoff();
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const tick = () => {
    const started = performance.now();
    running = sweepUntilIdle(ctx, { backoff, onItemError })
      .then((result) => {
        try {
          onRun?.(result, performance.now() - started);
        } catch {
          // Reporting a run must not stop the next one.
        }
      }, onError)
      .finally(() => {
        if (!stopped) timer = setTimeout(tick, intervalMs);
      });
  };
  timer = setTimeout(tick, intervalMs);
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
