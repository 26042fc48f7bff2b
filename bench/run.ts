// `npm run bench [-- --quick]`: see bench/README.md. Exit 0 when every check passed, 1 when one
// failed (one line says which), 2 when the bench could not start (usage, no DATABASE_URL).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  benchDatabaseNames,
  checkLedger,
  createDatabase,
  dropDatabase,
  runAudit,
  type AuditResult,
  type BenchDatabase,
} from './database.ts';
import type { SubscriberPool } from './figures/fanout.ts';
import { createScratchTables } from './figures/hot.ts';
import { transport } from './graphql.ts';
import type { PhaseResult } from './load.ts';
import { Acknowledged } from './operations.ts';
import { parseOptions, UsageError, type BenchOptions } from './options.ts';
import { computeFigures, figuresTable, LIMITERS, phasesTable, type Sections } from './report.ts';
import { embeddedSection, growthSection, postgresSection, type RunContext } from './sections.ts';
import { killAllServers, Launcher, prepareServer, serverCommand, type Limiter, type ServerSpec } from './server.ts';
import { newSecret } from './tokens.ts';

const here = path.dirname(fileURLToPath(import.meta.url));

interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

const processStarted = Date.now();

function log(message: string): void {
  console.log(`${((Date.now() - processStarted) / 1000).toFixed(1).padStart(6)} s  ${message}`);
}

async function main(): Promise<number> {
  let options: BenchOptions;
  try {
    options = parseOptions(process.argv.slice(2), path.join(here, 'results.json'));
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`bench: ${error.message}`);
      return 2;
    }
    throw error;
  }
  const baseUrl = process.env.DATABASE_URL;
  if (!baseUrl || !/^postgres(ql)?:\/\//.test(baseUrl)) {
    console.error(
      'bench: DATABASE_URL must name a PostgreSQL database (the bench creates and drops its own databases next to it)',
    );
    return 2;
  }
  try {
    serverCommand();
  } catch (error) {
    console.error(`bench: ${(error as Error).message}`);
    return 2;
  }

  const startedAt = new Date();
  const started = Date.now();
  const loadAverageStart = os.loadavg();
  const secret = newSecret();
  const names = benchDatabaseNames();
  const databases: BenchDatabase[] = [];
  // One PGlite data folder per server: PGlite is one process per folder.
  const embeddedDirs: Partial<Record<Limiter, string>> = {};
  if (!options.skipEmbedded) {
    for (const limiter of options.embeddedLimiters)
      embeddedDirs[limiter] = mkdtempSync(path.join(os.tmpdir(), `credits-bench-pglite-${limiter}-`));
  }
  const launchers: Launcher[] = [];
  const sections: Sections = { postgres: {}, growth: {}, embedded: {} };
  const phases: PhaseResult[] = [];
  const checks: Check[] = [];
  const warnings: string[] = [];
  const servers: Array<{
    name: string;
    startSeconds: number;
    cpuSeconds: number | null;
    exit: number | string | null;
  }> = [];
  const acknowledged = { main: new Acknowledged(), growth: new Acknowledged() };
  const pools = new Set<SubscriberPool>();
  const ctx: RunContext = { options, secret, sections, phases, pools, log };

  // Audits start as soon as their database is idle in the quick run; in the full run they wait
  // for the end, so that they do not load the machine while something is measured.
  const audits: Array<Promise<{ target: string; result: AuditResult }>> = [];
  const deferredAudits: Array<() => void> = [];
  const audit = (target: string, where: { databaseUrl?: string; dataDir?: string }) => {
    const start = () => void audits.push(runAudit(where).then((result) => ({ target, result })));
    if (options.concurrentSections) start();
    else deferredAudits.push(start);
  };

  const launcher = (spec: Omit<ServerSpec, 'authSecret'>) => {
    const made = new Launcher({ ...spec, authSecret: secret }, (server, how, cpuMs) => {
      servers.push({
        name: spec.name,
        startSeconds: server.startMs / 1000,
        cpuSeconds: cpuMs === null ? null : cpuMs / 1000,
        exit: how,
      });
      if (how !== 0) warnings.push(`server ${spec.name} exited with ${how} after SIGTERM (expected 0)`);
      const logged = server.stderrLines().filter((line) => !/SIGTERM received, shutting down/.test(line));
      if (logged.length > 0)
        warnings.push(
          `server ${spec.name} logged ${logged.length} line(s) on stderr, first: ${logged[0]!.slice(0, 200)}`,
        );
    });
    launchers.push(made);
    return made;
  };

  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    await Promise.all([...pools].map((pool) => pool.close().catch(() => {})));
    await Promise.all(launchers.map((item) => item.stop().catch(() => {})));
    killAllServers();
    if (!options.keep) {
      await Promise.all(
        databases.map((database) =>
          dropDatabase(baseUrl, database.name).catch((error) =>
            warnings.push(`could not drop ${database.name}: ${error}`),
          ),
        ),
      );
      for (const dir of Object.values(embeddedDirs)) rmSync(dir, { recursive: true, force: true });
    }
  };
  const onSignal = (signal: NodeJS.Signals) => {
    console.error(`bench: ${signal} received, cleaning up`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.once('exit', killAllServers);
  // Nothing may hang CI: past the deadline the run fails, cleaned up, with one line. (The timer
  // also keeps the process alive, so a run stuck on a promise nothing will settle cannot end as
  // if it had passed.)
  setTimeout(() => {
    console.error(`bench: FAILED: did not finish within ${options.deadlineMs / 60_000} min (last step logged above)`);
    void cleanup().finally(() => process.exit(1));
  }, options.deadlineMs);

  /** Runs a section; a section that throws is a failed check, and the others still run. */
  const section = async (name: string, work: () => Promise<void>) => {
    try {
      await work();
      checks.push({ name: `${name} ran`, ok: true, detail: 'completed' });
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      checks.push({ name: `${name} ran`, ok: false, detail: `${name} did not complete: ${message}` });
      log(`${name} failed: ${message}`);
    }
  };
  const inTurn = async (works: Array<() => Promise<void>>) => {
    if (options.concurrentSections) await Promise.all(works.map((work) => work()));
    else for (const work of works) await work();
  };

  try {
    log(
      `bench${options.quick ? ' --quick' : ''} on ${os.cpus().length} CPUs, load average ${loadAverageStart.map((value) => value.toFixed(1)).join(' ')}`,
    );
    const built = prepareServer();
    built.catch(() => {}); // awaited below; a failure is reported there
    const main = await createDatabase(baseUrl, names.main);
    databases.push(main);
    const growthDb = await createDatabase(baseUrl, names.growth);
    databases.push(growthDb);
    await createScratchTables(main.url);
    log(`server: ${serverCommand().args.join(' ')}; ${await built}`);
    const folders = Object.values(embeddedDirs);
    log(`databases ${main.name} and ${growthDb.name}${folders.length ? `, PGlite in ${folders.join(' and ')}` : ''}`);

    const mainServers: Record<Limiter, Launcher> = {
      production: launcher({ name: 'postgres-production', databaseUrl: main.url, limiter: 'production' }),
      off: launcher({ name: 'postgres-off', databaseUrl: main.url, limiter: 'off' }),
    };
    const growthServers: Record<Limiter, Launcher> = {
      production: launcher({ name: 'growth-production', databaseUrl: growthDb.url, limiter: 'production' }),
      off: launcher({ name: 'growth-off', databaseUrl: growthDb.url, limiter: 'off' }),
    };

    await inTurn([
      async () => {
        await inTurn(
          LIMITERS.map(
            (limiter) => () =>
              section(`PostgreSQL, limiter ${limiter}`, () =>
                postgresSection(ctx, limiter, mainServers[limiter], main, acknowledged.main),
              ),
          ),
        );
        audit(main.name, { databaseUrl: main.url });
      },
      async () => {
        await section('growth', () => growthSection(ctx, growthServers, growthDb, acknowledged.growth));
        audit(growthDb.name, { databaseUrl: growthDb.url });
      },
      async () => {
        await inTurn(
          Object.entries(embeddedDirs).map(([limiter, dataDir]) => async () => {
            const server = launcher({ name: `pglite-${limiter}`, dataDir, limiter: limiter as Limiter });
            await section(`PGlite, limiter ${limiter}`, () => embeddedSection(ctx, limiter as Limiter, server));
            audit(`PGlite (limiter ${limiter})`, { dataDir });
          }),
        );
      },
    ]);
    for (const start of deferredAudits) start();

    // The checks CI relies on: nothing failed, nothing overdrew, the audit is clean.
    log('checks');
    const failedPhases = phases.filter((phase) => phase.failures.count > 0);
    const failedCount = failedPhases.reduce((sum, phase) => sum + phase.failures.count, 0);
    checks.push({
      name: 'no failed requests',
      ok: failedCount === 0,
      detail:
        failedCount === 0
          ? `${phases.length} phases, every answer a success, an expected business result or a rate limit`
          : `${failedCount} failed requests or subscriptions in ${failedPhases.map((phase) => phase.name).join(', ')}; first: ${failedPhases[0]!.failures.samples[0]}`,
    });
    for (const limiter of LIMITERS) {
      const probe = sections.postgres[limiter]?.limiterProbe;
      if (!probe) continue;
      const expected = limiter === 'production' ? probe.refused > 0 : probe.refused === 0;
      const failures =
        probe.failures.count > 0 ? `; ${probe.failures.count} failed, first: ${probe.failures.samples[0]}` : '';
      checks.push({
        name: `limiter ${limiter} in force`,
        ok: expected && probe.failures.count === 0,
        detail: `a member token sending requests of ${probe.mutationsPerRequest} mutations, 30 at a time: ${probe.refused} of ${probe.requests} refused with 429 RATE_LIMITED (expected ${limiter === 'production' ? 'some' : 'none'})${failures}`,
      });
    }
    for (const limiter of LIMITERS) {
      const result = sections.postgres[limiter];
      if (!result?.fanout) continue;
      const fan = result.fanout;
      const problems = [
        fan.connected < fan.subscribers
          ? `${fan.subscribers - fan.connected} subscribers never got a first balance`
          : '',
        fan.lost > 0 ? `${fan.lost} events lost` : '',
        fan.lagging > 0
          ? `${fan.lagging} subscribers behind the newest balance ${options.drainMs / 1000} s after the changes`
          : '',
        (result.laggingAfterLoad ?? 0) > 0
          ? `${result.laggingAfterLoad} subscribers behind the newest balance after the reserve load`
          : '',
      ].filter(Boolean);
      checks.push({
        name: `subscribers, limiter ${limiter}`,
        ok: problems.length === 0,
        detail:
          problems.length === 0
            ? `${fan.connected} subscribers, every one ended on its organization's newest balance`
            : `fan-out (limiter ${limiter}): ${problems.join('; ')}`,
      });
    }
    for (const [database, told] of [
      [main, acknowledged.main],
      [growthDb, acknowledged.growth],
    ] as const) {
      const ledger = await checkLedger(database.url);
      const problems = [
        ledger.negativeLots > 0 ? `${ledger.negativeLots} lots negative` : '',
        ledger.overdrawnOrganizations > 0
          ? `${ledger.overdrawnOrganizations} organizations consumed more than granted`
          : '',
        ledger.reservations !== told.reservations
          ? `${ledger.reservations} reservations stored, ${told.reservations} acknowledged`
          : '',
        ledger.capturedCredits !== told.capturedCredits
          ? `${ledger.capturedCredits} credits captured, ${told.capturedCredits} acknowledged`
          : '',
      ].filter(Boolean);
      checks.push({
        name: `no overdraw in ${database.name}`,
        ok: problems.length === 0,
        detail:
          problems.length === 0
            ? `no lot negative, consumed ${ledger.consumed} ≤ granted ${ledger.granted}; ${ledger.reservations} reservations and ${ledger.capturedCredits} captured credits, as acknowledged`
            : `${database.name}: ${problems.join('; ')}`,
      });
    }
    for (const { target, result } of await Promise.all(audits)) {
      checks.push({
        name: `npm run audit on ${target}`,
        ok: result.code === 0,
        detail:
          result.code === 0
            ? `${result.firstLine} (${(result.ms / 1000).toFixed(1)} s)`
            : `npm run audit on ${target} exited ${result.code}: ${result.firstLine}`,
      });
    }
  } catch (error) {
    checks.push({
      name: 'bench ran',
      ok: false,
      detail: `bench could not run: ${error instanceof Error ? error.message : String(error)}`,
    });
    log(`bench could not run: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  } finally {
    await cleanup();
  }

  if (transport.retriedResets > 0)
    warnings.push(
      `${transport.retriedResets} request(s) sent again after the server closed an idle keep-alive connection under them`,
    );
  const figures = computeFigures(sections);
  const seconds = (Date.now() - started) / 1000;
  const results = {
    mode: options.quick ? 'quick' : 'full',
    startedAt: startedAt.toISOString(),
    seconds: Math.round(seconds * 10) / 10,
    machine: {
      cpus: os.cpus().length,
      loadAverageStart,
      loadAverageEnd: os.loadavg(),
      node: process.version,
      retriedConnectionResets: transport.retriedResets,
      serverCommand: serverCommand(),
    },
    settings: options,
    servers,
    limiters: {
      production:
        'NODE_ENV=production defaults: MUTATION_RATE_LIMIT 50/s burst 200 per member token; SERVICE_MUTATION_RATE_LIMIT 5,000/s burst 10,000 per organization for services, per subject for admins',
      off: 'MUTATION_RATE_LIMIT=0, SERVICE_MUTATION_RATE_LIMIT=0 and ORGANIZATION_RATE_LIMIT=0',
    },
    figures,
    sections,
    phases,
    checks,
    warnings,
  };
  writeFileSync(options.resultsFile, `${JSON.stringify(results, null, 2)}\n`);

  console.log(
    `\nFigures (${options.quick ? 'QUICK RUN: durations too short for the figures to mean anything' : 'full run'}; ${os.cpus().length} CPUs, load average ${results.machine.loadAverageEnd.map((value) => value.toFixed(1)).join(' ')})\n`,
  );
  console.log(figuresTable(figures));
  console.log('\nMeasurements\n');
  console.log(phasesTable(phases));
  console.log('\nChecks\n');
  for (const check of checks) console.log(`${check.ok ? 'ok  ' : 'FAIL'}  ${check.name}: ${check.detail}`);
  for (const warning of warnings) console.log(`warn  ${warning}`);
  console.log(`\nresults: ${path.relative(process.cwd(), options.resultsFile) || options.resultsFile}`);

  const failed = checks.filter((check) => !check.ok);
  if (failed.length > 0) {
    console.error(
      `bench: FAILED: ${failed[0]!.detail}${failed.length > 1 ? ` (and ${failed.length - 1} more failed check${failed.length > 2 ? 's' : ''})` : ''}`,
    );
    return 1;
  }
  console.log(`bench: ok, ${checks.length} checks passed in ${seconds.toFixed(0)} s`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    killAllServers();
    console.error(`bench: crashed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    process.exit(1);
  },
);
