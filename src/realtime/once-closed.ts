/**
 * Passes `iterator` through and calls `onClose` once when it ends: done, returned (the client
 * unsubscribed) or thrown. A subscription's slot and its place in the open-subscriptions gauge
 * are given back this way, whichever of the three ends it.
 */
export function onceClosed<T>(iterator: AsyncIterableIterator<T>, onClose: () => void): AsyncIterableIterator<T> {
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    onClose();
  };
  const wrapped: AsyncIterableIterator<T> = {
    async next(...args: [] | [unknown]) {
      try {
        const step = await iterator.next(...args);
        if (step.done) close();
        return step;
      } catch (error) {
        close();
        throw error;
      }
    },
    async return(value?: unknown) {
      close();
      return (await iterator.return?.(value)) ?? { done: true, value: value as T };
    },
    async throw(error?: unknown) {
      close();
      if (iterator.throw) return iterator.throw(error);
      throw error;
    },
    [Symbol.asyncIterator]() {
      return wrapped;
    },
  };
  return wrapped;
}
