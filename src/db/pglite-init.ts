// Creates a new PGlite data folder and exits (`node pglite-init.js <dataDir>`). PGlite's initdb
// peaks near 850 MB and WebAssembly memory never shrinks, so the serving process runs it in a
// short-lived child of its own and then opens the finished folder with small buffers.
import { PGlite } from '@electric-sql/pglite';

const dataDir = process.argv[2];
if (!dataDir) {
  console.error('usage: pglite-init <dataDir>');
  process.exit(2);
}
const pglite = new PGlite(dataDir);
await pglite.waitReady;
await pglite.close();
