// Turns the measurements into the figures (each a ratio to a baseline of the same run) and prints them.
import type { FanoutResult } from './figures/fanout.ts';
import type { GrowthPoint } from './figures/growth.ts';
import type { LedgerVsTransport } from './figures/ledger.ts';
import type { LimiterProbe } from './figures/limiter.ts';
import type { AlertsResult } from './figures/alerts.ts';
import type { NeighbourResult } from './figures/neighbour.ts';
import type { OpSummary, PhaseResult } from './load.ts';
import type { Limiter } from './server.ts';
import { ratio, round } from './stats.ts';

export const LIMITERS: Limiter[] = ['production', 'off'];

export interface PostgresSection {
  idleRssKb: number | null;
  limiterProbe?: LimiterProbe;
  ledger?: LedgerVsTransport;
  hot?: PhaseResult;
  sql?: PhaseResult;
  reservesWithout?: PhaseResult;
  fanout?: FanoutResult;
  reservesWith?: PhaseResult;
  neighbour?: NeighbourResult;
  alerts?: AlertsResult;
  /** Subscribers still behind their organization's newest balance after the load with subscribers. */
  laggingAfterLoad?: number;
}

export interface EmbeddedSection {
  idleRssKb: number | null;
  ledger?: LedgerVsTransport;
}

export interface Sections {
  postgres: Partial<Record<Limiter, PostgresSection>>;
  growth: Partial<Record<Limiter, { small?: GrowthPoint; large?: GrowthPoint }>>;
  embedded: Partial<Record<Limiter, EmbeddedSection>>;
}

/** One line of the figures table: a value per limiter setting, and the numbers it is made of. */
export interface FigureRow {
  figure: string;
  what: string;
  values: Partial<Record<Limiter, { value: number | null; detail: string }>>;
}

const n = (value: number | null | undefined, digits = 0) =>
  value == null ? '–' : value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
const ms = (value: number | null | undefined) => (value == null ? '–' : `${n(value, value < 10 ? 2 : 1)}`);
const cpu = (value: number | null | undefined) => (value == null ? '–' : value.toFixed(2));
const mb = (kb: number | null | undefined) => (kb == null ? '–' : `${n(kb / 1024, 0)} MB`);

function rate(op: OpSummary | undefined): number | null {
  return op?.perSecond ?? null;
}

function sumRates(...ops: Array<OpSummary | undefined>): number | null {
  if (ops.some((op) => op?.perSecond == null)) return null;
  return ops.reduce((sum, op) => sum + (op!.perSecond ?? 0), 0);
}

export function computeFigures(sections: Sections): FigureRow[] {
  const rows: FigureRow[] = [];
  const row = (
    figure: string,
    what: string,
    cell: (limiter: Limiter) => { value: number | null; detail: string } | null,
  ) => {
    const values: FigureRow['values'] = {};
    for (const limiter of LIMITERS) {
      const value = cell(limiter);
      if (value) values[limiter] = { value: round(value.value, 3), detail: value.detail };
    }
    rows.push({ figure, what, values });
  };

  row('1', 'ledger ÷ transport (reserve+capture req/s ÷ { __typename } req/s)', (limiter) => {
    const ledger = sections.postgres[limiter]?.ledger;
    if (!ledger) return null;
    const ops = ledger.ledger.ops;
    const requests = sumRates(ops.reserve, ops.capture);
    const transport = rate(ledger.transport.ops.typename);
    return { value: ratio(requests, transport), detail: `${n(requests)} ÷ ${n(transport)} req/s` };
  });
  row('1', 'reserve / capture / __typename p50 (ms)', (limiter) => {
    const ledger = sections.postgres[limiter]?.ledger;
    if (!ledger) return null;
    const { reserve, capture } = ledger.ledger.ops;
    return {
      value: reserve?.p50Ms ?? null,
      detail: `${ms(reserve?.p50Ms)} / ${ms(capture?.p50Ms)} / ${ms(ledger.transport.ops.typename?.p50Ms)}`,
    };
  });
  row('1', 'reserve / capture / __typename p99 (ms)', (limiter) => {
    const ledger = sections.postgres[limiter]?.ledger;
    if (!ledger) return null;
    const { reserve, capture } = ledger.ledger.ops;
    return {
      value: reserve?.p99Ms ?? null,
      detail: `${ms(reserve?.p99Ms)} / ${ms(capture?.p99Ms)} / ${ms(ledger.transport.ops.typename?.p99Ms)}`,
    };
  });
  row('2', 'hot org ÷ SQL row-lock transaction (per s)', (limiter) => {
    const section = sections.postgres[limiter];
    if (!section?.hot || !section.sql) return null;
    const hot = rate(section.hot.ops.reserve);
    const sql = rate(section.sql.ops.transaction);
    return { value: ratio(hot, sql), detail: `${n(hot)} ÷ ${n(sql)} /s` };
  });
  row('2', 'hot org ÷ spread reserves of figure 1 (reserves/s)', (limiter) => {
    const section = sections.postgres[limiter];
    if (!section?.hot || !section.ledger) return null;
    const hot = rate(section.hot.ops.reserve);
    const spread = rate(section.ledger.ledger.ops.reserve);
    return {
      value: ratio(hot, spread),
      detail: `${n(hot)} ÷ ${n(spread)} /s, hot p50 ${ms(section.hot.ops.reserve?.p50Ms)} ms, p99 ${ms(section.hot.ops.reserve?.p99Ms)} ms`,
    };
  });
  row('3', 'commit → event p50 / p99 (ms)', (limiter) => {
    const fanout = sections.postgres[limiter]?.fanout;
    if (!fanout) return null;
    return {
      value: fanout.commitToEvent.p50Ms,
      detail: `${ms(fanout.commitToEvent.p50Ms)} / ${ms(fanout.commitToEvent.p99Ms)} (${n(fanout.connected)} subscribers, ${n(fanout.changesPerSecond)} changes/s)`,
    };
  });
  row('3', 'events lost (coalesced, lagging subscribers)', (limiter) => {
    const fanout = sections.postgres[limiter]?.fanout;
    if (!fanout) return null;
    return {
      value: fanout.lost,
      detail: `${n(fanout.lost)} of ${n(fanout.expected)} (${n(fanout.coalesced)} coalesced, ${n(fanout.lagging)} lagging)`,
    };
  });
  row('3', 'server CPU per committed change, fanned out (ms)', (limiter) => {
    const fanout = sections.postgres[limiter]?.fanout;
    const cpu = fanout?.changes.cpuPerRequestMs;
    if (!fanout || !cpu) return null;
    return {
      value: cpu.server,
      detail: `${cpu.server?.toFixed(2) ?? '–'} ms server, ${cpu.postgres?.toFixed(2) ?? '–'} ms PostgreSQL`,
    };
  });
  row('3', 'server RSS per subscriber (KB)', (limiter) => {
    const fanout = sections.postgres[limiter]?.fanout;
    if (!fanout) return null;
    return {
      value: fanout.rssPerSubscriberKb,
      detail: `${n(fanout.rssPerSubscriberKb, 1)} KB (${mb(fanout.rssBeforeKb)} → ${mb(fanout.rssAfterKb)})`,
    };
  });
  row('4', 'reserves/s with ÷ without subscribers', (limiter) => {
    const section = sections.postgres[limiter];
    if (!section?.reservesWith || !section.reservesWithout) return null;
    const withSubscribers = rate(section.reservesWith.ops.reserve);
    const without = rate(section.reservesWithout.ops.reserve);
    return { value: ratio(withSubscribers, without), detail: `${n(withSubscribers)} ÷ ${n(without)} /s` };
  });
  row('5', 'reserve p50 large ÷ small journal', (limiter) => {
    const growth = sections.growth[limiter];
    if (!growth?.small || !growth.large) return null;
    const small = growth.small.phase.ops.reserve?.p50Ms;
    const large = growth.large.phase.ops.reserve?.p50Ms;
    return {
      value: ratio(large, small),
      detail: `${ms(large)} ms at ${n(growth.large.entriesAtStart)} ÷ ${ms(small)} ms at ${n(growth.small.entriesAtStart)} entries`,
    };
  });
  row('6', 'server RSS idle / under load 1 (PostgreSQL)', (limiter) => {
    const section = sections.postgres[limiter];
    if (!section) return null;
    const load = section.ledger?.ledger.rssKb?.max ?? null;
    return { value: load, detail: `${mb(section.idleRssKb)} / ${mb(load)}` };
  });
  row('6', 'embedded (PGlite): ledger ÷ transport', (limiter) => {
    const ledger = sections.embedded[limiter]?.ledger;
    if (!ledger) return null;
    const requests = sumRates(ledger.ledger.ops.reserve, ledger.ledger.ops.capture);
    const transport = rate(ledger.transport.ops.typename);
    return {
      value: ratio(requests, transport),
      detail: `${n(requests)} ÷ ${n(transport)} req/s, reserve p50 ${ms(ledger.ledger.ops.reserve?.p50Ms)} ms, p99 ${ms(ledger.ledger.ops.reserve?.p99Ms)} ms`,
    };
  });
  row('6', 'embedded (PGlite): RSS idle / under load', (limiter) => {
    const section = sections.embedded[limiter];
    if (!section) return null;
    const load = section.ledger?.ledger.rssKb?.max ?? null;
    return { value: load, detail: `${mb(section.idleRssKb)} / ${mb(load)}` };
  });
  row('7', 'neighbour reserve p99 during a burst ÷ alone', (limiter) => {
    const result = sections.postgres[limiter]?.neighbour;
    if (!result) return null;
    const during = result.during.ops.reserve?.p99Ms;
    const alone = result.alone.ops.reserve?.p99Ms;
    const settled = (result.burst.ops.capture?.ok ?? 0) + (result.burst.ops.refund?.ok ?? 0);
    return {
      value: ratio(during, alone),
      detail: `${ms(during)} ÷ ${ms(alone)} ms; ${n(settled)} settlements in ${n(result.burstMs)} ms, ${n(result.burstServerCpuMs)} ms server CPU`,
    };
  });
  row('8', 'reserves/s with ÷ without 10 balance alerts per organization', (limiter) => {
    const result = sections.postgres[limiter]?.alerts;
    if (!result) return null;
    const withAlerts = rate(result.with.ops.reserve);
    const without = rate(result.without.ops.reserve);
    return { value: ratio(withAlerts, without), detail: `${n(withAlerts)} ÷ ${n(without)} /s` };
  });
  return rows;
}

function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((header, column) =>
    Math.max(header.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => cell.padEnd(widths[column]!))
      .join('  ')
      .trimEnd();
  return [line(headers), widths.map((width) => '-'.repeat(width)).join('  '), ...rows.map(line)].join('\n');
}

export function figuresTable(rows: FigureRow[]): string {
  return table(
    ['fig', 'what', 'limiter as in production', 'limiter off'],
    rows.map((row) => {
      const cell = (limiter: Limiter) => {
        const value = row.values[limiter];
        if (!value) return '–';
        const isRatio = row.what.includes('÷');
        return isRatio ? `${value.value == null ? '–' : value.value.toFixed(2)}  (${value.detail})` : value.detail;
      };
      return [row.figure, row.what, cell('production'), cell('off')];
    }),
  );
}

export function phasesTable(phases: PhaseResult[]): string {
  const rows: string[][] = [];
  for (const phase of phases) {
    for (const [kind, op] of Object.entries(phase.ops)) {
      rows.push([
        phase.name,
        kind,
        n(phase.clients),
        n(op.perSecond, 1),
        ms(op.p50Ms),
        ms(op.p99Ms),
        n(op.ok),
        n(op.business),
        n(op.rateLimited),
        n(op.failed),
        cpu(phase.cpuPerRequestMs?.server),
        cpu(phase.cpuPerRequestMs?.postgres),
        cpu(phase.cpuPerRequestMs?.bench),
      ]);
    }
    if (Object.keys(phase.ops).length === 0)
      rows.push([phase.name, '–', n(phase.clients), '–', '–', '–', '0', '0', '0', n(phase.failures.count), '', '', '']);
  }
  return table(
    [
      'phase',
      'request',
      'clients',
      'per s',
      'p50 ms',
      'p99 ms',
      'ok',
      'business',
      '429',
      'failed',
      'CPU ms/req: server',
      'postgres',
      'bench',
    ],
    rows,
  );
}
