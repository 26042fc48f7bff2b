import type { Limiter } from './server.ts';

// What a run measures and for how long: the full run, and `--quick` (CI: proves the harness and
// the checks work, in well under a minute; its figures mean nothing).

export interface BenchOptions {
  quick: boolean;
  /** Keep the bench databases and the PGlite folder afterwards (their names are printed). */
  keep: boolean;
  /** Where the results go. */
  resultsFile: string;
  /** Closed-loop phases: warm-up (not counted), then the measured window. */
  warmupMs: number;
  durationMs: number;
  /** Figure 1 and 4: organizations the load is spread over, and concurrent clients. */
  organizations: number;
  spreadClients: number;
  /** Figure 2: concurrent clients on the one hot organization; the SQL baseline's pool size. */
  hotClients: number;
  sqlConnections: number;
  /** Figure 3: subscribers over the `organizations`, and the rate of committed changes. */
  subscribers: number;
  changesPerSecond: number;
  fanoutWarmupMs: number;
  fanoutMs: number;
  /** How long subscribers may take to reach the last committed version after the writes stop. */
  drainMs: number;
  /** Figure 5: journal sizes, and the fixed number of reserves whose p50 is taken at each. */
  growthSmallEntries: number;
  growthLargeEntries: number;
  growthClients: number;
  growthWarmupReserves: number;
  growthReserves: number;
  /** Figure 7: A's pending reservations settled at once, and B's ticks (every 50 ms) alone and at least during. */
  neighbourBurst: number;
  neighbourSamples: number;
  /** How long a server's RSS is watched (its least value taken) when idle and around the subscribers. */
  settleMs: number;
  /**
   * Run the independent sections (PostgreSQL with each limiter setting, growth, PGlite with each
   * setting) side by side instead of one after another: the quick run's figures mean nothing, and
   * this keeps it within a minute on a busy machine. The full run never does.
   */
  concurrentSections: boolean;
  /**
   * Limiter settings of the growth and embedded figures. The full run measures both; the quick
   * run one each (growth with the limiter off, PGlite as in production), so that both settings
   * still pass through every section's code without two more servers and audits.
   */
  growthLimiters: Limiter[];
  embeddedLimiters: Limiter[];
  /** Skip the embedded (PGlite) figure. */
  skipEmbedded: boolean;
  /** The whole run fails (and cleans up) when it has not finished after this long. */
  deadlineMs: number;
}

const FULL: Omit<BenchOptions, 'quick' | 'keep' | 'resultsFile' | 'skipEmbedded'> = {
  warmupMs: 3_000,
  durationMs: 15_000,
  organizations: 100,
  spreadClients: 32,
  hotClients: 64,
  sqlConnections: 32,
  subscribers: 2_000,
  changesPerSecond: 200,
  fanoutWarmupMs: 3_000,
  fanoutMs: 15_000,
  drainMs: 20_000,
  growthSmallEntries: 1_000,
  growthLargeEntries: 1_000_000,
  growthClients: 8,
  growthWarmupReserves: 100,
  growthReserves: 1_000,
  neighbourBurst: 1_000,
  neighbourSamples: 100,
  settleMs: 2_000,
  concurrentSections: false,
  growthLimiters: ['production', 'off'],
  embeddedLimiters: ['production', 'off'],
  deadlineMs: 2 * 60 * 60_000,
};

const QUICK: typeof FULL = {
  ...FULL,
  warmupMs: 150,
  durationMs: 600,
  organizations: 10,
  spreadClients: 8,
  hotClients: 8,
  sqlConnections: 4,
  subscribers: 50,
  changesPerSecond: 50,
  fanoutWarmupMs: 150,
  fanoutMs: 600,
  drainMs: 10_000,
  growthClients: 4,
  growthLargeEntries: 10_000,
  growthWarmupReserves: 8,
  growthReserves: 40,
  neighbourBurst: 100,
  neighbourSamples: 20,
  settleMs: 200,
  concurrentSections: true,
  growthLimiters: ['off'],
  embeddedLimiters: ['production'],
  deadlineMs: 10 * 60_000,
};

export class UsageError extends Error {}

export function parseOptions(argv: string[], defaultResultsFile: string): BenchOptions {
  let quick = false;
  let keep = false;
  let skipEmbedded = false;
  let resultsFile = defaultResultsFile;
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i]!;
    if (arg === '--quick') quick = true;
    else if (arg === '--keep') keep = true;
    else if (arg === '--no-embedded') skipEmbedded = true;
    else if (arg === '--out' && argv[i + 1]) resultsFile = argv[++i]!;
    else if (arg.startsWith('--out=')) resultsFile = arg.slice('--out='.length);
    else
      throw new UsageError(
        `unknown argument ${JSON.stringify(arg)} (known: --quick, --keep, --no-embedded, --out <file>)`,
      );
  }
  return { ...(quick ? QUICK : FULL), quick, keep, skipEmbedded, resultsFile };
}
