import { describe, expect, it } from 'vitest';
import { TokenBuckets } from '../../src/server/rate-limit.ts';

describe('per-token mutation buckets', () => {
  function buckets(perSecond: number, burst: number) {
    let nowMs = 0;
    const limiter = new TokenBuckets({ perSecond, burst, now: () => nowMs });
    return { limiter, advance: (ms: number) => void (nowMs += ms) };
  }

  it('allows a burst, then refuses with the time until enough has refilled', () => {
    const { limiter, advance } = buckets(2, 3);
    expect([1, 2, 3].map(() => limiter.take('a', 1).allowed)).toEqual([true, true, true]);
    expect(limiter.take('a', 1)).toEqual({ allowed: false, retryAfterSeconds: 1 });
    expect(limiter.take('a', 3)).toEqual({ allowed: false, retryAfterSeconds: 2 });
    advance(500); // one token back at 2 per second
    expect(limiter.take('a', 1).allowed).toBe(true);
    expect(limiter.take('a', 1).allowed).toBe(false);
  });

  it('keeps callers apart and never refills beyond the burst', () => {
    const { limiter, advance } = buckets(1, 2);
    expect(limiter.take('a', 2).allowed).toBe(true);
    expect(limiter.take('b', 2).allowed).toBe(true);
    advance(60_000);
    expect(limiter.take('a', 2).allowed).toBe(true);
    expect(limiter.take('a', 1).allowed).toBe(false);
  });

  it('refuses a request larger than the whole burst as one that can never pass', () => {
    const { limiter } = buckets(4, 8);
    expect(limiter.take('a', 9)).toEqual({ allowed: false, retryAfterSeconds: null });
    // Nothing was taken by the refusal.
    expect(limiter.take('a', 8).allowed).toBe(true);
  });

  it('forgets callers whose bucket has refilled, so one-off tokens do not accumulate', () => {
    const { limiter, advance } = buckets(10, 10);
    for (let i = 0; i < 100; i += 1) limiter.take(`caller-${i}`, 1);
    expect(limiter.size).toBe(100);
    advance(61_000);
    limiter.take('busy', 10);
    advance(1);
    limiter.take('busy', 1);
    expect(limiter.size).toBe(1);
  });
});
