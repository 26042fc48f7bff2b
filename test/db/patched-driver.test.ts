import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DRIVER_FIX_MARKER, UnpatchedDriverError, requirePatchedDriver } from '../../src/db/patched-driver.ts';

// patch-package applies patches/postgres+3.4.9.patch on every install; the service refuses to
// open PostgreSQL with a driver that lacks it (a database outage would crash the process).
describe('the patched postgres.js', () => {
  // The CommonJS entry is <root>/cjs/src/index.js.
  const root = path.resolve(path.dirname(createRequire(import.meta.url).resolve('postgres')), '..', '..');

  it('is installed at the pinned version with every build patched', () => {
    expect(JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).version).toBe('3.4.9');
    for (const build of ['src', 'cjs/src', 'cf/src']) {
      const source = readFileSync(path.join(root, build, 'connection.js'), 'utf8');
      // The guarded flush and both forgotten timers.
      expect(source.split(DRIVER_FIX_MARKER).length - 1, build).toBe(3);
    }
    expect(() => requirePatchedDriver()).not.toThrow();
  });

  it('refuses a driver without the fix, in one line that says what to do', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'credits-driver-'));
    const file = path.join(dir, 'connection.js');
    writeFileSync(
      file,
      readFileSync(path.join(root, 'src', 'connection.js'), 'utf8').replaceAll(DRIVER_FIX_MARKER, 'upstream'),
    );
    expect(() => requirePatchedDriver(file)).toThrow(UnpatchedDriverError);
    expect(() => requirePatchedDriver(file)).toThrow(
      /^The installed postgres\.js lacks the fix for porsager\/postgres#1208 .*run `npm ci`[^\n]*$/,
    );
  });
});
