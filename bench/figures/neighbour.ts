// Figure 7: a noisy neighbour. Organization A holds `burst` pending reservations and settles them
// all at once (half captured, half refunded, every request on its own connection), while
// organization B reserves once every 50 ms on the same server. B's reserve p99 while A's burst is
// in flight ÷ B's p99 alone, measured with the same pattern just before. The organization queue
// keeps A to one transaction (one pooled connection) waiting on its lock, so what is left is the
// server's CPU: taking in A's requests delays B's in the same event loop.
import { Worker } from 'node:worker_threads';
import { describeError, GENERATION, GraphQLHttp, type HttpAnswer, judge, type Judged, RESERVE } from '../graphql.ts';
import type { OpSummary, PhaseResult } from '../load.ts';
import { type Acknowledged, LedgerClient } from '../operations.ts';
import type { RunningServer } from '../server.ts';
import type { BenchOrganization } from '../setup.ts';
import { nowMs, percentile, round } from '../stats.ts';

export interface NeighbourOptions {
  /** A's pending reservations, settled at once. */
  burst: number;
  /** B's ticks alone, and at least as many during the burst (which they outlast). */
  samples: number;
  tickMs: number;
}

export interface NeighbourResult {
  /** B alone, then B during A's burst, then A's burst itself. */
  alone: PhaseResult;
  during: PhaseResult;
  burst: PhaseResult;
  burstMs: number;
  /** Server CPU over the burst (B's ticks in it included). */
  burstServerCpuMs: number | null;
}

// B's client runs on a thread of its own, as another tenant's backend on another machine would:
// the bench's event loop, busy sending and reading A's burst, must not delay the reading of B's
// answers. Open loop: one reserve per tick whatever the answers, until told to stop and at least
// `samples` sent. Plain JavaScript, so that the worker needs no TypeScript loader.
const TICKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { url, token, query, organizationId, samples, tickMs, generation, keyPrefix } = workerData;
let stopped = false;
parentPort.on('message', () => { stopped = true; });
async function reserve(i) {
  const sent = performance.now();
  try {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer ' + token },
      body: JSON.stringify({ query, variables: { input: { organizationId, idempotencyKey: keyPrefix + i, generation, ttlSeconds: 3600 } } }),
    });
    const text = await response.text();
    return { ms: performance.now() - sent, status: response.status, text, retryAfter: response.headers.get('retry-after') };
  } catch (error) {
    return { ms: performance.now() - sent, error: String(error) };
  }
}
(async () => {
  const started = performance.now();
  const runs = [];
  for (let i = 0; runs.length < samples || !stopped; i++) {
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, started + i * tickMs - performance.now())));
    runs.push(reserve(i));
  }
  parentPort.postMessage(await Promise.all(runs));
  parentPort.close();
})();
`;

interface Tick {
  ms: number;
  status?: number;
  text?: string;
  retryAfter?: string | null;
  error?: string;
}

let tickerSequence = 0;

function startTicker(server: RunningServer, quiet: BenchOrganization, options: NeighbourOptions, label: string) {
  const worker = new Worker(TICKER, {
    eval: true,
    workerData: {
      url: server.url,
      token: quiet.serviceToken,
      query: RESERVE,
      organizationId: quiet.id,
      samples: options.samples,
      tickMs: options.tickMs,
      generation: GENERATION,
      keyPrefix: `bench-${label}-neighbour-${(tickerSequence += 1)}-`,
    },
  });
  const ticks = new Promise<Tick[]>((resolve, reject) => {
    worker.once('message', (answers: Tick[]) => {
      resolve(answers);
      void worker.terminate();
    });
    worker.once('error', reject);
  });
  ticks.catch(() => {});
  return {
    stop() {
      worker.postMessage('stop');
      return ticks;
    },
  };
}

/** One phase's summary of judged answers with their latencies (every answer is measured). */
class Tally {
  private readonly kinds = new Map<string, { latencies: number[]; ok: number; business: number; rateLimited: number; failed: number }>();
  readonly failures = { count: 0, samples: [] as string[] };

  add(name: string, verdict: Judged, ms: number): void {
    let kind = this.kinds.get(name);
    if (!kind) this.kinds.set(name, (kind = { latencies: [], ok: 0, business: 0, rateLimited: 0, failed: 0 }));
    kind[verdict.outcome] += 1;
    if (verdict.outcome === 'ok' || verdict.outcome === 'business') kind.latencies.push(ms);
    if (verdict.outcome === 'failed') {
      this.failures.count += 1;
      const detail = `${name}: ${verdict.detail ?? 'failed'}`;
      if (this.failures.samples.length < 5 && !this.failures.samples.includes(detail)) this.failures.samples.push(detail);
    }
  }

  phase(name: string, clients: number, windowMs: number): PhaseResult {
    const ops: Record<string, OpSummary> = {};
    for (const [kind, { latencies, ...answers }] of this.kinds) {
      const sorted = latencies.sort((a, b) => a - b);
      ops[kind] = {
        perSecond: windowMs > 0 ? round(sorted.length / (windowMs / 1000), 1) : null,
        p50Ms: round(percentile(sorted, 50, true), 2),
        p99Ms: round(percentile(sorted, 99, true), 2),
        measured: sorted.length,
        ...answers,
      };
    }
    return { name, clients, windowMs: Math.round(windowMs), ops, failures: this.failures };
  }
}

function judgeTicks(ticks: Tick[], acknowledged: Acknowledged, tally: Tally): void {
  for (const tick of ticks) {
    const verdict: Judged =
      tick.error !== undefined
        ? { outcome: 'failed', detail: tick.error }
        : judge(tick as HttpAnswer, 'reserveCredits', 'ReserveCreditsSuccess', ['InsufficientCreditsError']);
    if (verdict.outcome === 'ok') acknowledged.reservations += 1;
    tally.add('reserve', verdict, tick.ms);
  }
}

export async function neighbour(
  server: RunningServer,
  noisy: BenchOrganization,
  quiet: BenchOrganization,
  options: NeighbourOptions,
  acknowledged: Acknowledged,
  label: string,
): Promise<NeighbourResult> {
  // Every one of A's requests has a connection of its own, as 1,000 workers of a backend would.
  const http = new GraphQLHttp(server.url, options.burst);
  const ledger = new LedgerClient(http, acknowledged, `${label}-noisy`);
  try {
    const setup = new Tally();
    const pending: string[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (next < options.burst) {
          next += 1;
          const verdict = await ledger.reserve(noisy);
          setup.add('reserve', verdict, 0);
          if (verdict.outcome === 'ok') pending.push(String(verdict.value.reservation.id));
        }
      }),
    );
    if (setup.failures.count > 0) throw new Error(`neighbour set-up: ${setup.failures.samples[0]}`);

    const aloneTally = new Tally();
    const aloneStarted = nowMs();
    judgeTicks(await startTicker(server, quiet, options, label).stop(), acknowledged, aloneTally);
    const alone = aloneTally.phase(`${label}: neighbour reserves alone`, 1, nowMs() - aloneStarted);

    const burstTally = new Tally();
    const duringTally = new Tally();
    const ticker = startTicker(server, quiet, options, label);
    const cpuBefore = server.cpuMs();
    const burstStarted = nowMs();
    await Promise.all(
      pending.map(async (id, i) => {
        const sent = nowMs();
        const kind = i % 2 ? 'refund' : 'capture';
        let verdict: Judged;
        try {
          verdict = i % 2 ? await ledger.refund(noisy, id) : await ledger.capture(noisy, id);
        } catch (error) {
          verdict = { outcome: 'failed', detail: describeError(error) };
        }
        // Every reservation is settled once: a second answer for it would be a business result.
        if (verdict.outcome === 'business') verdict = { outcome: 'failed', detail: `${kind} of ${id} answered ${verdict.value.__typename}` };
        burstTally.add(kind, verdict, nowMs() - sent);
      }),
    );
    const burstMs = nowMs() - burstStarted;
    const cpuAfter = server.cpuMs();
    judgeTicks(await ticker.stop(), acknowledged, duringTally);
    const duringMs = nowMs() - burstStarted;
    return {
      alone,
      during: duringTally.phase(`${label}: neighbour reserves during a burst of ${pending.length}`, 1, duringMs),
      burst: burstTally.phase(`${label}: burst of ${pending.length} settlements, 1 org`, pending.length, burstMs),
      burstMs: Math.round(burstMs),
      burstServerCpuMs: cpuBefore === null || cpuAfter === null ? null : cpuAfter - cpuBefore,
    };
  } finally {
    http.close();
  }
}
