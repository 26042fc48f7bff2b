// The bench's sections: each starts the server(s) it needs, makes its own organizations, measures
// its figures and stops its servers. They share nothing but the database they write to, so the
// quick run may run them side by side; the full run runs them one after another.
import type { BenchDatabase } from './database.ts';
import { countEntries } from './database.ts';
import { reservesWithAlerts } from './figures/alerts.ts';
import { fanout, SubscriberPool, subscribersCaughtUp } from './figures/fanout.ts';
import { reserveLatency } from './figures/growth.ts';
import { hotReserves, sqlRowLock } from './figures/hot.ts';
import { probeLimiter } from './figures/limiter.ts';
import { neighbour } from './figures/neighbour.ts';
import { ledgerVsTransport, spreadReserves } from './figures/ledger.ts';
import type { PhaseResult, Window } from './load.ts';
import { Acknowledged } from './operations.ts';
import type { BenchOptions } from './options.ts';
import type { EmbeddedSection, PostgresSection, Sections } from './report.ts';
import { preparePgliteDataDir } from './pglite-template.ts';
import { seedJournalTo } from './seed.ts';
import { quietRssKb, type Launcher, type Limiter } from './server.ts';
import { createOrganizations } from './setup.ts';

export interface RunContext {
  options: BenchOptions;
  secret: string;
  sections: Sections;
  phases: PhaseResult[];
  /** Subscriber pools still open, for the clean-up of an interrupted run. */
  pools: Set<SubscriberPool>;
  log(message: string): void;
}

function timeWindow(options: BenchOptions): Window {
  return { kind: 'time', warmupMs: options.warmupMs, durationMs: options.durationMs };
}

function assertAlive(server: { crashed(): string | null }): void {
  const crash = server.crashed();
  if (crash) throw new Error(crash);
}

/** Figures 1 to 4, and 6's PostgreSQL memory, with one limiter setting. */
export async function postgresSection(
  ctx: RunContext,
  limiter: Limiter,
  launcher: Launcher,
  database: BenchDatabase,
  acknowledged: Acknowledged,
): Promise<void> {
  const { options } = ctx;
  const label = `pg/${limiter}`;
  try {
    const server = await launcher.start();
    ctx.log(`${label}: server up (pid ${server.pid}); creating ${options.organizations} + 1 organizations`);
    const organizations = await createOrganizations(server.url, ctx.secret, options.organizations, `${limiter}-spread`);
    const [hot] = await createOrganizations(server.url, ctx.secret, 1, `${limiter}-hot`);
    // The subscribers' worker takes a while to load; side by side (quick run) it loads meanwhile.
    const openPool = () =>
      SubscriberPool.open(server, ctx.secret, organizations, options.subscribers).then(async (opened) => {
        ctx.pools.add(opened);
        await opened.ready();
        return opened;
      });
    const early = options.concurrentSections ? openPool() : null;
    early?.catch(() => {});
    const result: PostgresSection = { idleRssKb: await quietRssKb(server, options.settleMs) };
    ctx.sections.postgres[limiter] = result;
    const window = timeWindow(options);

    result.limiterProbe = await probeLimiter(server.url, ctx.secret, hot!);
    ctx.log(
      `${label}: limiter probe, ${result.limiterProbe.refused} of ${result.limiterProbe.requests} requests of a member token refused`,
    );

    // Subscribers first, on a server that has only been set up, so that their memory is not
    // hidden by garbage the load leaves behind.
    ctx.log(`${label}: figure 3, ${options.subscribers} subscribers, ${options.changesPerSecond} changes/s`);
    const pool = await (early ?? openPool());
    try {
      result.fanout = await fanout(
        server,
        pool,
        options.subscribers,
        database.url,
        organizations,
        {
          rate: options.changesPerSecond,
          warmupMs: options.fanoutWarmupMs,
          durationMs: options.fanoutMs,
          drainMs: options.drainMs,
          connectTimeoutMs: 120_000,
          settleMs: options.settleMs,
        },
        acknowledged,
        label,
      );
      ctx.phases.push(result.fanout.changes);
      ctx.log(`${label}: figure 4, reserves with ${result.fanout.connected} subscribers`);
      result.reservesWith = await spreadReserves(
        server,
        organizations,
        options.spreadClients,
        window,
        acknowledged,
        `${label} with subscribers`,
      );
      ctx.phases.push(result.reservesWith);
      result.laggingAfterLoad = (await subscribersCaughtUp(pool, database.url, organizations, options.drainMs)).lagging;
      const events = await pool.collect();
      ctx.phases.push({
        name: `${label}: subscriptions`,
        clients: options.subscribers,
        windowMs: 0,
        ops: {},
        failures: events.failures,
      });
    } finally {
      ctx.pools.delete(pool);
      await pool.close();
    }
    result.fanout.rssAfterDisconnectKb = await quietRssKb(server, options.settleMs);
    assertAlive(server);

    ctx.log(`${label}: figure 4, reserves without subscribers`);
    result.reservesWithout = await spreadReserves(
      server,
      organizations,
      options.spreadClients,
      window,
      acknowledged,
      `${label} no subscribers`,
    );
    ctx.phases.push(result.reservesWithout);

    ctx.log(`${label}: figure 8, reserves without and with 10 balance alerts per organization`);
    result.alerts = await reservesWithAlerts(
      server,
      ctx.secret,
      organizations,
      options.spreadClients,
      window,
      acknowledged,
      label,
    );
    ctx.phases.push(result.alerts.without, result.alerts.with);
    assertAlive(server);

    ctx.log(
      `${label}: figure 1, { __typename } then reserve+capture over ${organizations.length} organizations, ${options.spreadClients} clients`,
    );
    result.ledger = await ledgerVsTransport(server, organizations, options.spreadClients, window, acknowledged, label);
    ctx.phases.push(result.ledger.transport, result.ledger.ledger);

    ctx.log(
      `${label}: figure 2, reserves on one organization (${options.hotClients} clients), then the SQL row lock (${options.sqlConnections} connections)`,
    );
    result.hot = await hotReserves(server, hot!, options.hotClients, window, acknowledged, label);
    ctx.phases.push(result.hot);
    result.sql = await sqlRowLock(
      database.url,
      limiter === 'production' ? 1 : 2,
      options.sqlConnections,
      options.hotClients,
      window,
      label,
    );
    ctx.phases.push(result.sql);
    assertAlive(server);

    ctx.log(
      `${label}: figure 7, one organization settles ${options.neighbourBurst} reservations at once while another reserves every 50 ms`,
    );
    const [noisy, quiet] = await createOrganizations(server.url, ctx.secret, 2, `${limiter}-neighbour`);
    result.neighbour = await neighbour(
      server,
      noisy!,
      quiet!,
      { burst: options.neighbourBurst, samples: options.neighbourSamples, tickMs: 50 },
      acknowledged,
      label,
    );
    ctx.phases.push(result.neighbour.alone, result.neighbour.during, result.neighbour.burst);
    assertAlive(server);
  } finally {
    await launcher.stop();
  }
}

/** Figure 5: the same reserves at a small and at a large journal, with each limiter setting. */
export async function growthSection(
  ctx: RunContext,
  launchers: Record<Limiter, Launcher>,
  database: BenchDatabase,
  acknowledged: Acknowledged,
): Promise<void> {
  const { options } = ctx;
  const limiters = options.growthLimiters;
  // The full run has one server at a time: production, off, (seed), off, production.
  const use = async (limiter: Limiter) => {
    if (!options.concurrentSections) {
      for (const other of limiters) if (other !== limiter) await launchers[other].stop();
    }
    return launchers[limiter].start();
  };
  try {
    if (options.concurrentSections) for (const limiter of limiters) void launchers[limiter].start();
    const first = await use(limiters[0]!);
    ctx.log(`growth: server up (pid ${first.pid}); creating ${options.growthClients} organizations`);
    const organizations = await createOrganizations(first.url, ctx.secret, options.growthClients, 'growth');
    const small = await seedJournalTo(database.url, options.growthSmallEntries);
    ctx.log(`growth: journal seeded to ${small.after.toLocaleString('en-US')} entries`);
    const measure = async (limiter: Limiter, size: 'small' | 'large') => {
      const server = await use(limiter);
      const entries = await countEntries(database.url);
      ctx.log(
        `growth: figure 5, ${options.growthReserves} reserves at ${entries.toLocaleString('en-US')} entries, limiter ${limiter}`,
      );
      const point = await reserveLatency(
        server,
        organizations,
        options.growthWarmupReserves,
        options.growthReserves,
        entries,
        acknowledged,
        `growth/${limiter}`,
      );
      ctx.phases.push(point.phase);
      (ctx.sections.growth[limiter] ??= {})[size] = point;
      assertAlive(server);
    };
    for (const limiter of limiters) await measure(limiter, 'small');
    ctx.log(`growth: seeding the journal to ${options.growthLargeEntries.toLocaleString('en-US')} entries`);
    const large = await seedJournalTo(database.url, options.growthLargeEntries);
    ctx.log(
      `growth: seeded ${(large.after - large.before).toLocaleString('en-US')} entries over ${large.organizations} organizations in ${(large.ms / 1000).toFixed(1)} s`,
    );
    for (const limiter of [...limiters].reverse()) await measure(limiter, 'large');
  } finally {
    await Promise.all(limiters.map((limiter) => launchers[limiter].stop()));
  }
}

/** Figure 6, embedded: figure 1 on PGlite (its own data folder), and the server's memory. */
export async function embeddedSection(ctx: RunContext, limiter: Limiter, launcher: Launcher): Promise<void> {
  const { options } = ctx;
  const label = `pglite/${limiter}`;
  try {
    await preparePgliteDataDir(launcher.spec.dataDir!);
    const server = await launcher.start();
    ctx.log(`${label}: server up (pid ${server.pid}); creating ${options.organizations} organizations`);
    const organizations = await createOrganizations(
      server.url,
      ctx.secret,
      options.organizations,
      `embedded-${limiter}`,
    );
    const result: EmbeddedSection = { idleRssKb: await quietRssKb(server, options.settleMs) };
    ctx.sections.embedded[limiter] = result;
    ctx.log(`${label}: figure 6, { __typename } then reserve+capture, ${options.spreadClients} clients`);
    result.ledger = await ledgerVsTransport(
      server,
      organizations,
      options.spreadClients,
      timeWindow(options),
      new Acknowledged(),
      label,
    );
    ctx.phases.push(result.ledger.transport, result.ledger.ledger);
    assertAlive(server);
  } finally {
    await launcher.stop();
  }
}
