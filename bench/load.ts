// Closed-loop load: `clients` loops, each sending its next request as soon as the previous one
// is answered. Answers that arrive between the end of the warm-up and the end of the window are
// measured (rate and latency); every answer, warm-up and drain included, is judged, so a failure
// anywhere counts.
import type { CpuProbe, CpuSplit } from './cpu.ts';
import { describeError, type Judged } from './graphql.ts';
import { nowMs, percentile, round, sleep } from './stats.ts';

export type Window =
  | { kind: 'time'; warmupMs: number; durationMs: number }
  /** A fixed number of script iterations: `warmup` not measured, then `measured`. */
  | { kind: 'count'; warmup: number; measured: number };

export interface OpSummary {
  /** Measured answers (ok + business) per second of the window. */
  perSecond: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
  measured: number;
  /** Every answer of the phase, warm-up and drain included. */
  ok: number;
  business: number;
  rateLimited: number;
  failed: number;
}

export interface PhaseResult {
  name: string;
  clients: number;
  windowMs: number;
  ops: Record<string, OpSummary>;
  failures: { count: number; samples: string[] };
  /** The server's resident memory during the window, when sampled. */
  rssKb?: { max: number; mean: number } | null;
  /**
   * CPU time over the whole phase (warm-up and drain included) divided by every answer of the
   * phase: where the time of one request goes.
   */
  cpuPerRequestMs?: { server: number | null; postgres: number | null; bench: number; requests: number } | null;
}

export function perRequest(split: CpuSplit, requests: number): PhaseResult['cpuPerRequestMs'] {
  if (requests === 0) return null;
  const each = (ms: number | null) => (ms === null ? null : round(ms / requests, 3));
  return { server: each(split.serverMs), postgres: each(split.postgresMs), bench: each(split.benchMs)!, requests };
}

export interface ScriptContext {
  client: number;
  iteration: number;
  /** False once the window has closed (or the count is reached): finish what is started, begin nothing. */
  running(): boolean;
  /**
   * Sends one request and records its answer under `kind`. A rate-limited answer is followed by
   * the wait the server asked for (cut short when the window closes), as a well-behaved client would.
   */
  call(kind: string, request: () => Promise<Judged>): Promise<Judged>;
}

export interface LoadOptions {
  name: string;
  clients: number;
  window: Window;
  /** Samples the server's RSS (KiB) every 250 ms of the window. */
  sampleRss?: () => number | null;
  /** Checked between iterations: a crashed server ends the phase at once with this failure. */
  crashed?: () => string | null;
  /** Counts the phase's CPU time (see cpu.ts). */
  cpu?: () => Promise<CpuProbe>;
  /** A count window gives up (with a failure) when it has not finished after this long; default 5 min. */
  deadlineMs?: number;
}

interface Kind {
  latencies: number[];
  ok: number;
  business: number;
  rateLimited: number;
  failed: number;
}

export async function runLoad(
  options: LoadOptions,
  script: (ctx: ScriptContext) => Promise<void>,
): Promise<PhaseResult> {
  const kinds = new Map<string, Kind>();
  const failures = { count: 0, samples: [] as string[] };
  const window = options.window;
  const started = nowMs();
  const t0 = window.kind === 'time' ? started + window.warmupMs : 0;
  const t1 = window.kind === 'time' ? t0 + window.durationMs : 0;
  const total = window.kind === 'count' ? window.warmup + window.measured : 0;
  let nextIteration = 0;
  let measuredFrom = Number.POSITIVE_INFINITY;
  let measuredTo = 0;
  let crash: string | null = null;

  const fail = (detail: string) => {
    failures.count += 1;
    if (failures.samples.length < 5 && !failures.samples.includes(detail)) failures.samples.push(detail);
  };
  const kindOf = (name: string) => {
    let kind = kinds.get(name);
    if (!kind) kinds.set(name, (kind = { latencies: [], ok: 0, business: 0, rateLimited: 0, failed: 0 }));
    return kind;
  };

  const rss: number[] = [];
  const sampler = options.sampleRss
    ? setInterval(() => {
        const now = nowMs();
        if (window.kind === 'count' || (now >= t0 && now <= t1)) {
          const value = options.sampleRss!();
          if (value !== null) rss.push(value);
        }
      }, 250)
    : null;

  const cpu = options.cpu ? await options.cpu() : null;
  const deadline = started + (options.deadlineMs ?? 300_000);
  let late = false;
  const running = () => {
    if (crash !== null) return false;
    if (window.kind === 'time') return nowMs() < t1;
    if (nowMs() > deadline) late = true;
    return !late && nextIteration < total;
  };

  async function loop(client: number): Promise<void> {
    for (;;) {
      crash ??= options.crashed?.() ?? null;
      if (!running()) return;
      const iteration = nextIteration++;
      if (window.kind === 'count' && iteration >= total) return;
      const measuredIteration = window.kind === 'count' && iteration >= window.warmup;
      await script({
        client,
        iteration,
        running,
        async call(name, request) {
          const kind = kindOf(name);
          const start = nowMs();
          let verdict: Judged;
          try {
            verdict = await request();
          } catch (error) {
            verdict = { outcome: 'failed', detail: describeError(error) };
          }
          const end = nowMs();
          kind[verdict.outcome] += 1;
          const measured = window.kind === 'time' ? end >= t0 && end <= t1 : measuredIteration;
          if (verdict.outcome === 'failed') {
            fail(`${name}: ${verdict.detail ?? 'failed'}`);
            await sleep(5);
          } else if (verdict.outcome === 'rateLimited') {
            const wait =
              window.kind === 'time'
                ? Math.min(verdict.retryAfterMs ?? 1000, Math.max(0, t1 - nowMs()))
                : (verdict.retryAfterMs ?? 1000);
            await sleep(wait);
          } else if (measured) {
            kind.latencies.push(end - start);
            measuredFrom = Math.min(measuredFrom, start);
            measuredTo = Math.max(measuredTo, end);
          }
          return verdict;
        },
      });
    }
  }

  try {
    await Promise.all(Array.from({ length: options.clients }, (_, client) => loop(client)));
  } finally {
    if (sampler) clearInterval(sampler);
  }
  const split = cpu ? await cpu.stop() : null;
  if (crash) fail(crash);
  if (late)
    fail(
      `gave up after ${Math.round((options.deadlineMs ?? 300_000) / 1000)} s with ${Math.min(nextIteration, total)} of ${total} iterations started`,
    );
  const windowMs = window.kind === 'time' ? window.durationMs : Math.max(0, measuredTo - measuredFrom);
  const ops: Record<string, OpSummary> = {};
  let answers = 0;
  for (const [name, kind] of kinds) {
    answers += kind.ok + kind.business + kind.rateLimited + kind.failed;
    const sorted = kind.latencies.sort((a, b) => a - b);
    ops[name] = {
      perSecond: windowMs > 0 ? round(sorted.length / (windowMs / 1000), 1) : null,
      p50Ms: round(percentile(sorted, 50, true), 2),
      p99Ms: round(percentile(sorted, 99, true), 2),
      measured: sorted.length,
      ok: kind.ok,
      business: kind.business,
      rateLimited: kind.rateLimited,
      failed: kind.failed,
    };
  }
  return {
    name: options.name,
    clients: options.clients,
    windowMs: Math.round(windowMs),
    ops,
    failures,
    rssKb: options.sampleRss
      ? rss.length
        ? { max: Math.max(...rss), mean: Math.round(rss.reduce((a, b) => a + b, 0) / rss.length) }
        : null
      : undefined,
    cpuPerRequestMs: split ? perRequest(split, answers) : undefined,
  };
}
