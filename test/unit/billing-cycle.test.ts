import { describe, expect, it } from 'vitest';
import { cycleBoundary, cycleContaining } from '../../src/ledger/billing-cycle.ts';

const iso = (date: Date) => date.toISOString();

describe('billing cycles', () => {
  it('clamps the anchor day to the month end and returns to it afterwards', () => {
    const anchor = new Date('2026-01-31T10:00:00Z');
    expect([1, 2, 3, 4].map((k) => iso(cycleBoundary(anchor, k)))).toEqual([
      '2026-02-28T10:00:00.000Z',
      '2026-03-31T10:00:00.000Z',
      '2026-04-30T10:00:00.000Z',
      '2026-05-31T10:00:00.000Z',
    ]);
    expect(iso(cycleBoundary(new Date('2027-12-31T00:00:00Z'), 2))).toBe('2028-02-29T00:00:00.000Z');
  });

  it('computes boundaries backwards from the anchor too', () => {
    const anchor = new Date('2026-03-31T00:00:00Z');
    expect(iso(cycleBoundary(anchor, -1))).toBe('2026-02-28T00:00:00.000Z');
    expect(iso(cycleBoundary(anchor, -3))).toBe('2025-12-31T00:00:00.000Z');
  });

  it('finds the cycle that contains now, for anchors in the past and the future', () => {
    const anchor = new Date('2026-01-31T10:00:00Z');
    expect(cycleContaining(anchor, new Date('2026-03-15T00:00:00Z'))).toEqual({
      startsAt: new Date('2026-02-28T10:00:00Z'),
      endsAt: new Date('2026-03-31T10:00:00Z'),
    });
    expect(cycleContaining(anchor, new Date('2026-03-31T10:00:00Z')).startsAt).toEqual(
      new Date('2026-03-31T10:00:00Z'),
    );
    expect(cycleContaining(anchor, new Date('2025-11-05T00:00:00Z'))).toEqual({
      startsAt: new Date('2025-10-31T10:00:00Z'),
      endsAt: new Date('2025-11-30T10:00:00Z'),
    });
  });

  it('always returns a cycle with start <= now < end, one clamped month long', () => {
    const anchor = new Date('2024-01-29T23:59:59.999Z');
    for (let day = 0; day < 1200; day += 7) {
      const now = new Date(Date.UTC(2023, 0, 1) + day * 86_400_000 + day * 3_600_000);
      const cycle = cycleContaining(anchor, now);
      expect(cycle.startsAt.getTime()).toBeLessThanOrEqual(now.getTime());
      expect(cycle.endsAt.getTime()).toBeGreaterThan(now.getTime());
      const days = (cycle.endsAt.getTime() - cycle.startsAt.getTime()) / 86_400_000;
      expect(days).toBeGreaterThanOrEqual(28);
      expect(days).toBeLessThanOrEqual(31);
    }
  });
});
