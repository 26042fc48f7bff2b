import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));

export interface AuditRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `npm run audit` as an operator would, with the given variables replacing the database
 * ones of this process (so a test's DATABASE_URL never leaks into a PGlite run).
 */
export function runAuditCli(env: { DATABASE_URL?: string; DATA_DIR?: string }): Promise<AuditRun> {
  const childEnv: NodeJS.ProcessEnv = {
    ...process.env,
    DATABASE_URL: env.DATABASE_URL ?? '',
    DATA_DIR: env.DATA_DIR ?? '',
  };
  return new Promise((resolve) => {
    execFile(
      'npm',
      ['run', '--silent', 'audit'],
      { cwd: root, env: childEnv, timeout: 60_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}
