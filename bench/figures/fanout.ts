// Figure 3: live-balance fan-out. Subscribers (graphql-ws over ws, in a worker thread) watch the
// organizations while a paced writer commits changes; each event is matched with the response of
// the mutation that made its version, and every committed version is accounted for per subscriber.
import { Worker } from 'node:worker_threads';
import { balanceVersions } from '../database.ts';
import { GraphQLHttp, type Judged } from '../graphql.ts';
import { serverCpu } from '../cpu.ts';
import { perRequest, type PhaseResult } from '../load.ts';
import { LedgerClient, type Acknowledged } from '../operations.ts';
import { quietRssKb, type RunningServer } from '../server.ts';
import type { BenchOrganization } from '../setup.ts';
import { nowMs, percentile, round, sleep } from '../stats.ts';
import type { FromWorker, SubscriberSpec, SubscribersData, ToWorker } from '../subscribers.ts';
import { signToken } from '../tokens.ts';

/** The main thread's handle on the subscribers' worker. */
export class SubscriberPool {
  private readonly worker: Worker;
  private readonly waiting: Array<{ type: FromWorker['type']; resolve: (message: FromWorker) => void }> = [];
  private workerError: Error | null = null;

  private constructor(data: SubscribersData) {
    const module = new URL('../subscribers.ts', import.meta.url).href;
    // Worker threads do not inherit `--import tsx`; register it before loading the module.
    const boot = `import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(module)}); })`;
    this.worker = new Worker(boot, { eval: true, workerData: data });
    this.worker.on('message', (message: FromWorker) => {
      const index = this.waiting.findIndex((waiter) => waiter.type === message.type);
      if (index >= 0) this.waiting.splice(index, 1)[0]!.resolve(message);
    });
    this.worker.on('error', (error) => {
      this.workerError = error;
    });
  }

  static async open(server: RunningServer, secret: string, organizations: BenchOrganization[], count: number): Promise<SubscriberPool> {
    const specs: SubscriberSpec[] = [];
    for (let index = 0; index < count; index += 1) {
      const organization = organizations[index % organizations.length]!;
      // A member (a person at a screen) per subscriber.
      specs.push({ organizationId: organization.id, token: await signToken(secret, `bench-viewer-${index}`, 'member', organization.id) });
    }
    return new SubscriberPool({ wsUrl: server.url.replace(/^http/, 'ws'), subscribers: specs, connectConcurrency: 50 });
  }

  private request<T extends FromWorker['type']>(message: ToWorker, reply: T, timeoutMs: number): Promise<Extract<FromWorker, { type: T }>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`subscriber worker did not answer ${message.type} within ${timeoutMs / 1000} s${this.workerError ? `: ${this.workerError.message}` : ''}`)), timeoutMs);
      this.waiting.push({
        type: reply,
        resolve: (answer) => {
          clearTimeout(timer);
          resolve(answer as Extract<FromWorker, { type: T }>);
        },
      });
      this.worker.postMessage(message);
    });
  }

  /** Resolves once the worker has loaded its module and listens. */
  ready() {
    return this.request({ type: 'ping' }, 'pong', 120_000);
  }

  connect(timeoutMs: number) {
    return this.request({ type: 'connect', timeoutMs }, 'connected', timeoutMs + 30_000);
  }

  record(on: boolean): void {
    this.worker.postMessage({ type: 'record', on } satisfies ToWorker);
  }

  waitFor(versions: Record<string, number>, timeoutMs: number) {
    return this.request({ type: 'waitFor', versions, timeoutMs }, 'caughtUp', timeoutMs + 30_000);
  }

  collect() {
    return this.request({ type: 'collect' }, 'events', 60_000);
  }

  async close(): Promise<void> {
    try {
      await this.request({ type: 'close' }, 'closed', 30_000);
    } finally {
      await this.worker.terminate();
    }
  }
}

interface Committed {
  /** Organization id → version → when the mutation that made it was answered. */
  versions: Map<string, Map<number, number>>;
  phase: PhaseResult;
  t0: number;
  t1: number;
}

/**
 * Commits `rate` changes a second, round-robin over the organizations, one change in flight per
 * organization (so the balance in each answer is the version that change made): a reservation,
 * then its capture, and so on.
 */
async function pacedChanges(
  server: RunningServer,
  organizations: BenchOrganization[],
  rate: number,
  warmupMs: number,
  durationMs: number,
  acknowledged: Acknowledged,
  label: string,
): Promise<Committed> {
  const http = new GraphQLHttp(server.url, Math.min(organizations.length, 64));
  const ledger = new LedgerClient(http, acknowledged, `${label}-fanout`);
  const states = organizations.map((organization) => ({ organization, busy: false, pending: null as string | null }));
  const versions = new Map<string, Map<number, number>>(organizations.map((organization) => [organization.id, new Map()]));
  const latencies: number[] = [];
  const counts = { ok: 0, business: 0, rateLimited: 0, failed: 0, skipped: 0 };
  const failures = { count: 0, samples: [] as string[] };
  const cpu = await serverCpu(server)();
  const started = nowMs();
  const t0 = started + warmupMs;
  const t1 = t0 + durationMs;
  const inFlight = new Set<Promise<void>>();
  let issued = 0;
  let cursor = 0;

  const change = async (state: (typeof states)[number]) => {
    const start = nowMs();
    let verdict: Judged;
    try {
      verdict = state.pending ? await ledger.capture(state.organization, state.pending) : await ledger.reserve(state.organization);
    } catch (error) {
      verdict = { outcome: 'failed', detail: error instanceof Error ? error.message : String(error) };
    }
    const end = nowMs();
    counts[verdict.outcome] += 1;
    if (verdict.outcome === 'failed') {
      failures.count += 1;
      if (failures.samples.length < 5) failures.samples.push(`change: ${verdict.detail}`);
      return;
    }
    if (verdict.outcome !== 'ok') return;
    state.pending = state.pending ? null : String(verdict.value.reservation.id);
    // Changes sent after the warm-up are accounted for at the subscribers, however late their answer.
    if (start >= t0) versions.get(state.organization.id)!.set(Number(verdict.value.balance.version), end);
    if (end >= t0 && end <= t1) latencies.push(end - start);
  };

  while (nowMs() < t1 && !server.crashed()) {
    const due = Math.floor(((nowMs() - started) * rate) / 1000);
    while (issued < due) {
      issued += 1;
      let picked: (typeof states)[number] | null = null;
      for (let tries = 0; tries < states.length && !picked; tries += 1) {
        const state = states[cursor]!;
        cursor = (cursor + 1) % states.length;
        if (!state.busy) picked = state;
      }
      if (!picked) {
        counts.skipped += 1;
        continue;
      }
      const state = picked;
      state.busy = true;
      const done: Promise<void> = change(state).finally(() => {
        state.busy = false;
        inFlight.delete(done);
      });
      inFlight.add(done);
    }
    await sleep(1);
  }
  await Promise.all(inFlight);
  const split = await cpu.stop();
  http.close();
  if (server.crashed()) {
    failures.count += 1;
    failures.samples.push(server.crashed()!);
  }
  latencies.sort((a, b) => a - b);
  return {
    versions,
    t0,
    t1,
    phase: {
      name: `${label}: paced changes for fan-out`,
      clients: organizations.length,
      windowMs: durationMs,
      ops: {
        change: {
          perSecond: round(latencies.length / (durationMs / 1000), 1),
          p50Ms: round(percentile(latencies, 50, true), 2),
          p99Ms: round(percentile(latencies, 99, true), 2),
          measured: latencies.length,
          ok: counts.ok,
          business: counts.business,
          rateLimited: counts.rateLimited,
          failed: counts.failed,
        },
      },
      failures,
      // Includes sending every change to its organization's subscribers.
      cpuPerRequestMs: perRequest(split, counts.ok + counts.business + counts.rateLimited + counts.failed),
    },
  };
}

export interface FanoutResult {
  subscribers: number;
  connected: number;
  connectMs: number;
  /** The server's quiet RSS before the subscribers connected, with them, and after they left. */
  rssBeforeKb: number | null;
  rssAfterKb: number | null;
  rssPerSubscriberKb: number | null;
  /** After they left, which is after figure 4's load with them: mostly that load's garbage, not a leak. */
  rssAfterDisconnectKb?: number | null;
  changes: PhaseResult;
  changesPerSecond: number | null;
  /** Event arrival minus the answer to the mutation that made the version (negative: the event came first). */
  commitToEvent: { p50Ms: number | null; p99Ms: number | null; samples: number };
  /** (subscriber, committed version) pairs: versions made by changes sent after the warm-up. */
  expected: number;
  delivered: number;
  /** Not sent because a later version was sent in the same burst (allowed: screens end on the newest). */
  coalesced: number;
  /** Never followed by this or any later version: the subscriber was left behind. */
  lost: number;
  /** Subscribers that had not reached their organization's last version `drainMs` after the writes stopped. */
  lagging: number;
  catchUpMs: number;
  /** Wall time of each step, for the curious. */
  stepsMs: Record<string, number>;
}

export async function fanout(
  server: RunningServer,
  pool: SubscriberPool,
  subscriberCount: number,
  databaseUrl: string,
  organizations: BenchOrganization[],
  options: { rate: number; warmupMs: number; durationMs: number; drainMs: number; connectTimeoutMs: number; settleMs: number },
  acknowledged: Acknowledged,
  label: string,
): Promise<FanoutResult> {
  const steps: Record<string, number> = {};
  let last = nowMs();
  const step = (name: string) => {
    const now = nowMs();
    steps[name] = Math.round(now - last);
    last = now;
  };
  const rssBeforeKb = await quietRssKb(server, options.settleMs);
  step('settleBefore');
  const connected = await pool.connect(options.connectTimeoutMs);
  step('connect');
  const rssAfterKb = await quietRssKb(server, options.settleMs);
  step('settleAfter');

  pool.record(true);
  const committed = await pacedChanges(server, organizations, options.rate, options.warmupMs, options.durationMs, acknowledged, label);
  step('changes');
  const finalVersions = await balanceVersions(databaseUrl, organizations.map((organization) => organization.id));
  const caughtUp = await pool.waitFor(finalVersions, options.drainMs);
  step('catchUp');
  const events = await pool.collect();
  pool.record(false);
  step('collect');

  const latencies: number[] = [];
  let expected = 0;
  let delivered = 0;
  let coalesced = 0;
  let lost = 0;
  for (const subscriber of events.recorded) {
    const made = committed.versions.get(subscriber.organizationId);
    if (!made) continue;
    const arrivals = new Map<number, number>();
    subscriber.versions.forEach((version, index) => {
      if (!arrivals.has(version)) arrivals.set(version, subscriber.times[index]!);
    });
    for (const [version, answeredAt] of made) {
      expected += 1;
      const arrived = arrivals.get(version);
      if (arrived !== undefined) {
        delivered += 1;
        latencies.push(arrived - answeredAt);
      } else if (subscriber.lastVersion > version) coalesced += 1;
      else lost += 1;
    }
  }
  latencies.sort((a, b) => a - b);
  const perSubscriber = rssBeforeKb !== null && rssAfterKb !== null && connected.connected > 0 ? (rssAfterKb - rssBeforeKb) / connected.connected : null;
  return {
    subscribers: subscriberCount,
    connected: connected.connected,
    connectMs: connected.ms,
    rssBeforeKb,
    rssAfterKb,
    rssPerSubscriberKb: round(perSubscriber, 1),
    changes: committed.phase,
    changesPerSecond: committed.phase.ops.change?.perSecond ?? null,
    commitToEvent: { p50Ms: round(percentile(latencies, 50, true), 2), p99Ms: round(percentile(latencies, 99, true), 2), samples: latencies.length },
    expected,
    delivered,
    coalesced,
    lost,
    lagging: caughtUp.lagging,
    catchUpMs: caughtUp.ms,
    stepsMs: steps,
  };
}

/** After a load with subscribers connected: did every subscriber end on its organization's newest balance? */
export async function subscribersCaughtUp(pool: SubscriberPool, databaseUrl: string, organizations: BenchOrganization[], drainMs: number) {
  const versions = await balanceVersions(databaseUrl, organizations.map((organization) => organization.id));
  return pool.waitFor(versions, drainMs);
}
