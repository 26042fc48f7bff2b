import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export class EmbeddedDatabaseBusyError extends Error {
  override name = 'EmbeddedDatabaseBusyError';
}

/**
 * Claims an embedded (PGlite) data folder for this process. PGlite is one in-process database
 * with no locking of its own: a second process opening the same folder (the `credits` command
 * while the server runs) would corrupt it. The claim is a file holding the owner's process id; a
 * claim whose process is gone (killed, crashed) is stale and taken over. Returns the release.
 */
export function claimEmbeddedDatabase(dataDir: string): () => void {
  const file = path.join(dataDir, 'credits.pid');
  for (let attempt = 0; attempt < 2; attempt += 1) {
    try {
      writeFileSync(file, String(process.pid), { flag: 'wx' });
      return () => rmSync(file, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const owner = Number(readFileSync(file, 'utf8').trim());
      if (Number.isSafeInteger(owner) && owner > 0 && owner !== process.pid && isAlive(owner)) {
        throw new EmbeddedDatabaseBusyError(
          `process ${owner} has the embedded database in ${dataDir} open; stop it first (or use DATABASE_URL).`,
        );
      }
      rmSync(file, { force: true });
    }
  }
  throw new EmbeddedDatabaseBusyError(`could not claim the embedded database in ${dataDir}.`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
