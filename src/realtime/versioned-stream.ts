/** Anything whose newer states carry a larger `version`. */
export interface Versioned {
  version: number;
}

/**
 * One subscriber's stream of states. It only ever moves forward: a state older than one already
 * accepted is dropped, and an equally new one is accepted only as a resync. Only the newest
 * undelivered state is kept, so a slow consumer never builds a queue; it just skips to the
 * latest balance. This is a hand-written iterator rather than an async generator because a
 * generator's `return()` waits for its next `yield`: an idle subscriber that leaves must be
 * released at once, not at the next change.
 */
export class VersionedStream<T extends Versioned> implements AsyncIterableIterator<T> {
  #pending: T | null = null;
  #lastVersion = Number.NEGATIVE_INFINITY;
  #waiters: Array<(result: IteratorResult<T>) => void> = [];
  #done = false;
  readonly #onEnd: () => void;

  constructor(onEnd: () => void = () => {}) {
    this.#onEnd = onEnd;
  }

  /**
   * Offers a state. It is accepted when newer than every state accepted so far, or, with
   * `resync`, when exactly as new (the consumer is told the current state again). Returns
   * whether it was accepted.
   */
  offer(value: T, resync = false): boolean {
    if (this.#done) return false;
    if (value.version < this.#lastVersion || (value.version === this.#lastVersion && !resync)) return false;
    this.#lastVersion = value.version;
    const waiter = this.#waiters.shift();
    if (waiter) waiter({ value, done: false });
    else this.#pending = value;
    return true;
  }

  /** Ends the stream; a state not yet delivered is still delivered first. */
  end(): void {
    if (this.#done) return;
    this.#done = true;
    for (const waiter of this.#waiters.splice(0)) waiter({ value: undefined, done: true });
    this.#onEnd();
  }

  next(): Promise<IteratorResult<T>> {
    if (this.#pending) {
      const value = this.#pending;
      this.#pending = null;
      return Promise.resolve({ value, done: false });
    }
    if (this.#done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** The consumer left: drop anything pending and end at once. */
  return(): Promise<IteratorResult<T>> {
    this.#pending = null;
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}
