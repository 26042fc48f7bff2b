import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * postgres.js 3.4.9 ends the whole process when a backend dies mid-transaction: its deferred
 * flush writes to a socket that is already gone (porsager/postgres#1208, fix proposed in #1209,
 * unreleased). `patches/postgres+3.4.9.patch`, applied by patch-package on every install, guards
 * that flush; the version is pinned exactly so that the patch always fits. Each patched line
 * carries this marker.
 */
export const DRIVER_FIX_MARKER = 'credit-service patch: porsager/postgres#1208';

export class UnpatchedDriverError extends Error {
  override name = 'UnpatchedDriverError';
}

/** The driver's connection module, as this process loads it. */
function connectionModuleFile(): string {
  return fileURLToPath(new URL('./connection.js', import.meta.resolve('postgres')));
}

/**
 * Refuses to run on a postgres.js without the fix: a database outage would then crash the
 * service instead of answering SERVICE_UNAVAILABLE. Checked before the first connection.
 */
export function requirePatchedDriver(file = connectionModuleFile()): void {
  if (!readFileSync(file, 'utf8').includes(DRIVER_FIX_MARKER)) {
    throw new UnpatchedDriverError(
      'The installed postgres.js lacks the fix for porsager/postgres#1208 (patches/postgres+3.4.9.patch); run `npm ci` so that patch-package applies it.',
    );
  }
}
