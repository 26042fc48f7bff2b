import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

// The layers the README's Layout describes, enforced: the ledger is the domain and knows nothing
// of GraphQL or HTTP, and the GraphQL schema reaches the database only through the ledger. A
// violating import fails here with the file and the import it names.

const SRC = fileURLToPath(new URL('../../src/', import.meta.url));

/** Every module a file imports or re-exports, statically or dynamically, type-only ones included. */
function importsOf(source: string): string[] {
  return ts.preProcessFile(source, true, true).importedFiles.map((file) => file.fileName);
}

/** Relative imports become paths under src/ (`ledger/lots.ts`); packages stay as they are. */
function resolve(fromFile: string, specifier: string): string {
  if (!specifier.startsWith('.')) return specifier;
  return path
    .relative(SRC, path.resolve(path.dirname(fromFile), specifier))
    .split(path.sep)
    .join('/');
}

function sourceFiles(folder: string): string[] {
  return readdirSync(path.join(SRC, folder), { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith('.ts'))
    .map((file) => path.join(SRC, folder, file));
}

/** `file: import` for every import of the layer that `allowed` refuses. */
function violations(folder: string, allowed: (target: string) => boolean): string[] {
  return sourceFiles(folder).flatMap((file) =>
    importsOf(readFileSync(file, 'utf8'))
      .map((specifier) => resolve(file, specifier))
      .filter((target) => !allowed(target))
      .map((target) => `${path.relative(SRC, file)}: ${target}`),
  );
}

const within = (target: string, ...prefixes: string[]) =>
  prefixes.some((prefix) => target === prefix || target.startsWith(prefix));

describe('layers', () => {
  it('sees every kind of import a file can make', () => {
    const source = `
      import { a } from 'graphql';
      import type { B } from '../db/client.ts';
      export { c } from '@pothos/core';
      export * from './d.ts';
      const e = await import('graphql-yoga');`;
    expect(importsOf(source)).toEqual(['graphql', '../db/client.ts', '@pothos/core', './d.ts', 'graphql-yoga']);
    expect(sourceFiles('ledger').length).toBeGreaterThan(10);
    expect(sourceFiles('schema').length).toBeGreaterThan(10);
  });

  it('keeps src/ledger free of GraphQL, Pothos, yoga, the schema, the server and the transports', () => {
    // An allow-list rather than a deny-list: the domain may use the database, the clock, Node and
    // drizzle, and a new dependency of the domain is a decision this test makes someone take.
    const allowed = (target: string) =>
      within(target, 'ledger/', 'db/', 'node:', 'drizzle-orm') || target === 'clock.ts';
    expect(violations('ledger', allowed)).toEqual([]);
  });

  it('lets src/schema reach the database only through src/ledger', () => {
    // No exception for type-only imports of row types either: the ledger exports every row type
    // the schema shows (CreditLot, LedgerEntry, GenerationModel, …) under its own name, so the
    // schema never needs the database module, and a column renamed there surfaces in the ledger.
    const database = (target: string) => within(target, 'db/', 'drizzle-orm', 'postgres', '@electric-sql/pglite');
    expect(violations('schema', (target) => !database(target))).toEqual([]);
  });
});
