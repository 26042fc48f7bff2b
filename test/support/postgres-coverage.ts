// Vitest global setup: PostgreSQL coverage must never vanish without a trace.
//
// Without DATABASE_URL the suites still run on PGlite, but the PostgreSQL-only files show up as
// skipped and the postgres case of every `describe.each(drivers)` suite is simply not there. This
// prints one line saying so, naming the files; and under CI (the `CI` variable set) it refuses to
// run at all, so a CI job that lost its DATABASE_URL fails instead of passing on half the tests.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));

function testFiles(directory: string): string[] {
  return readdirSync(directory, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(directory, entry.name);
    if (entry.isDirectory()) return entry.name === 'node_modules' ? [] : testFiles(full);
    return entry.name.endsWith('.test.ts') ? [full] : [];
  });
}

/** Test files that run only on PostgreSQL, and those that also run a postgres case or target. */
export function postgresCoverage(): { postgresOnly: string[]; perDriver: string[] } {
  const postgresOnly: string[] = [];
  const perDriver: string[] = [];
  for (const file of testFiles(path.join(root, 'test')).sort()) {
    const source = readFileSync(file, 'utf8');
    const relative = path.relative(root, file);
    if (/skipIf\(\s*!hasPostgres\s*\)/.test(source)) postgresOnly.push(relative);
    else if (/\bdrivers\b|\bhasPostgres\b/.test(source)) perDriver.push(relative);
  }
  return { postgresOnly, perDriver };
}

export function skippedLine(coverage: ReturnType<typeof postgresCoverage>): string {
  return (
    `PostgreSQL suites skipped: DATABASE_URL is not set (PostgreSQL-only files: ${coverage.postgresOnly.join(', ')}; ` +
    `and the postgres case of ${coverage.perDriver.length} files that run per driver). ` +
    `Set DATABASE_URL=postgres://… to run them.`
  );
}

export default function setup(): void {
  if (process.env.DATABASE_URL) return;
  const line = skippedLine(postgresCoverage());
  const ci = process.env.CI;
  if (ci && ci !== 'false' && ci !== '0') {
    throw new Error(`CI is set but DATABASE_URL is not: refusing to run without the PostgreSQL suites. ${line}`);
  }
  console.log(line);
}
