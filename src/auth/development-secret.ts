import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/**
 * Outside production a missing AUTH_SECRET is created once and kept in the data folder, so that
 * the server and the `credits` command line sign and check tokens with the same key. It is made
 * readable by its owner only on every start, so a copy or a loose umask does not leave it open
 * to other users of the machine.
 */
export function developmentSecret(dataDir: string): string {
  mkdirSync(dataDir, { recursive: true });
  const file = path.join(dataDir, 'auth-secret');
  if (!existsSync(file)) writeFileSync(file, randomBytes(32).toString('base64url'), { mode: 0o600 });
  chmodSync(file, 0o600);
  return readFileSync(file, 'utf8').trim();
}
