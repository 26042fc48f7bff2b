import { AsyncLocalStorage } from 'node:async_hooks';

// The typed errors (members of result unions) an operation's resolvers returned, collected per
// operation for its log line and metrics. The errors plugin reports each one without the
// resolver's context, so the operation's list travels in async-local storage instead.
const scope = new AsyncLocalStorage<string[]>();

/** The errors plugin's `onResolvedError`: notes the error's type name for the running operation. */
export function noteResolvedError(error: Error): void {
  scope.getStore()?.push(error.name);
}

/** Runs an operation's execution with `names` collecting the typed errors it returns. */
export function collectResolvedErrors<T>(names: string[], run: () => T): T {
  return scope.run(names, run);
}
