// A fresh PGlite data folder costs an initdb inside WebAssembly (several CPU seconds, far more
// on a busy machine). The bench makes one bare folder (`new PGlite(dir)` and nothing else, exactly
// the server's first step on an empty DATA_DIR) per PGlite version, keeps it in
// node_modules/.cache, and copies it for each embedded server; the server then applies the
// migrations itself, as on any first start.
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { root } from './server.ts';

function pgliteVersion(): string {
  const manifest = path.join(root, 'node_modules', '@electric-sql', 'pglite', 'package.json');
  return (JSON.parse(readFileSync(manifest, 'utf8')) as { version: string }).version;
}

function initialize(dir: string): Promise<void> {
  const code =
    "import { PGlite } from '@electric-sql/pglite'; const db = await PGlite.create(process.env.PGLITE_DIR); await db.close();";
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--input-type=module', '-e', code],
      { cwd: root, env: { ...process.env, PGLITE_DIR: dir }, timeout: 300_000 },
      (error, _stdout, stderr) =>
        error
          ? reject(new Error(`could not initialize a PGlite folder: ${stderr.trim() || error.message}`))
          : resolve(),
    );
  });
}

let template: Promise<string> | null = null;

async function makeTemplate(): Promise<string> {
  const cache = path.join(root, 'node_modules', '.cache', 'credits-bench');
  const target = path.join(cache, `pglite-${pgliteVersion()}`);
  if (existsSync(path.join(target, 'PG_VERSION'))) return target;
  mkdirSync(cache, { recursive: true });
  const building = mkdtempSync(path.join(cache, 'building-'));
  try {
    await initialize(building);
    try {
      renameSync(building, target);
    } catch (error) {
      // Another run finished first: use its folder.
      if (!existsSync(path.join(target, 'PG_VERSION'))) throw error;
    }
  } finally {
    rmSync(building, { recursive: true, force: true });
  }
  return target;
}

/** Fills `dataDir` (the server's DATA_DIR) with a copy of the bare PGlite folder. */
export async function preparePgliteDataDir(dataDir: string): Promise<void> {
  template ??= makeTemplate();
  template.catch(() => (template = null));
  cpSync(await template, path.join(dataDir, 'pglite'), { recursive: true });
}
