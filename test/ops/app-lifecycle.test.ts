import { describe, expect, it } from 'vitest';
import { createApp } from '../../src/app.ts';
import { secretKey } from '../../src/auth/tokens.ts';
import { ManualClock } from '../../src/clock.ts';
import { createTestDatabase, drivers } from '../support/database.ts';

// Building the app must start nothing: no listener connection, no sweeper timer, no process
// metrics sampling, no movement observer. All of it begins with start() (or listen()) and ends
// with stop().

const SWEEP_INTERVAL_MS = 10;

function metricValue(text: string, name: string): number | null {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? null : Number(line.split(' ')[1]);
}

describe.each(drivers)('createApp and start (%s)', (driver) => {
  it('does nothing in the background until started, and everything once started', async () => {
    const database = await createTestDatabase(driver);
    const app = createApp({
      database,
      clock: new ManualClock('2026-01-15T12:00:00Z'),
      authKey: secretKey('x'.repeat(32)),
      sweepIntervalMs: SWEEP_INTERVAL_MS,
      metricsEnabled: true,
    });
    const metrics = async () => (await app.yoga.fetch('http://localhost/metrics')).text();
    try {
      // Several sweep intervals pass; an idle app must not have swept, listened or sampled.
      await new Promise((resolve) => setTimeout(resolve, SWEEP_INTERVAL_MS * 10));
      expect(app.notifier.stats().listens).toBe(0);
      const idle = await metrics();
      expect(metricValue(idle, 'credits_sweeper_runs_total')).toBe(0);
      expect(idle).not.toMatch(/^process_cpu_seconds_total /m);

      await app.start();
      await app.start();
      expect(app.notifier.stats().listens).toBe(1);
      await expect
        .poll(async () => metricValue(await metrics(), 'credits_sweeper_runs_total'), { timeout: 10_000 })
        .toBeGreaterThan(0);
      expect(await metrics()).toMatch(/^process_cpu_seconds_total /m);
    } finally {
      await app.stop();
      await database.close();
    }
    // A stopped app cannot be started again.
    await expect(app.start()).rejects.toThrow(/stopped/);
  });

  it('stops cleanly without ever having started', async () => {
    const database = await createTestDatabase(driver);
    const app = createApp({
      database,
      clock: new ManualClock('2026-01-15T12:00:00Z'),
      authKey: secretKey('x'.repeat(32)),
      sweepIntervalMs: SWEEP_INTERVAL_MS,
    });
    await app.stop();
    expect(app.notifier.stats().listens).toBe(0);
    await database.close();
  });
});
