/** Attempts of one delivery before it is recorded as failed. */
export const WEBHOOK_ATTEMPTS_MAX = 12;
/** The wait before the first retry (the first attempt is made right after the event committed). */
export const FIRST_RETRY_DELAY_MS = 5_000;
/**
 * Each wait is this many times the one before, so that the 11 waits between 12 attempts add up to
 * about a day: 5 s x (2.52^11 - 1) / 1.52 = 85,500 s, 23.8 h.
 */
export const BACKOFF_FACTOR = 2.52;
/** Each wait is stretched or shrunk by up to this share, so that receivers that failed together are not all retried together. */
export const BACKOFF_JITTER = 0.2;

export interface RetrySchedule {
  attemptsMax: number;
  /** The wait after the `failedAttempts`-th failed attempt (1 for the first). */
  delayMs(failedAttempts: number): number;
}

/** Exponential backoff with jitter: about 5 s, 13 s, 32 s, 80 s, … 6.6 h. */
export function exponentialBackoff(
  firstDelayMs = FIRST_RETRY_DELAY_MS,
  factor = BACKOFF_FACTOR,
  random: () => number = Math.random,
): RetrySchedule {
  return {
    attemptsMax: WEBHOOK_ATTEMPTS_MAX,
    delayMs(failedAttempts) {
      const base = firstDelayMs * factor ** Math.max(0, failedAttempts - 1);
      return Math.round(base * (1 + BACKOFF_JITTER * (2 * random() - 1)));
    },
  };
}
