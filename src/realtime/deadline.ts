// setTimeout fires at once for any delay above 2^31 - 1 ms (about 24.8 days), and tokens may
// live longer than that, so long waits are taken in steps no longer than this.
const LONGEST_TIMER_MS = 2_147_483_647;

/**
 * Passes `source` through until `endsAtMs` (milliseconds since the epoch, or null for never).
 * At that moment the source is closed and `final` is delivered as the last value, so the
 * consumer learns why the stream ended instead of seeing a silent completion.
 */
export function untilDeadline<T, F>(
  source: AsyncIterableIterator<T>,
  endsAtMs: number | null,
  final: F,
): AsyncIterableIterator<T | F> {
  if (endsAtMs === null) return source;
  let expired = false;
  let finished = false;
  let timer: NodeJS.Timeout | undefined;

  const arm = () => {
    const remaining = endsAtMs - Date.now();
    if (remaining <= 0) {
      expired = true;
      // Closing the source resolves a pending next() at once, which then delivers `final`.
      void source.return?.();
      return;
    }
    timer = setTimeout(arm, Math.min(remaining, LONGEST_TIMER_MS));
    timer.unref();
  };
  arm();

  const finish = () => {
    finished = true;
    clearTimeout(timer);
  };

  return {
    async next(): Promise<IteratorResult<T | F>> {
      if (finished) return { value: undefined, done: true };
      const result = expired ? null : await source.next();
      if (expired) {
        finish();
        return { value: final, done: false };
      }
      if (result!.done) finish();
      return result!;
    },
    async return(): Promise<IteratorResult<T | F>> {
      finish();
      await source.return?.();
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}
