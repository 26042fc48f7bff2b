// Runs after `npm install` (the package's postinstall). It fixes one defect of postgres.js 3.4.9
// that the database-outage test hits and that upstream has not released a fix for yet
// (porsager/postgres#1208, #1154; the fix follows the open pull request #1209):
//
// Small writes are flushed from a setImmediate. When the connection closes first (its backend
// was terminated, or the network dropped), the transaction code still sends its ROLLBACK on it,
// and the deferred flush then calls `socket.write` on a null socket: an uncaught TypeError that
// ends the whole process. Also, teardown cancels the pending flush without forgetting it, so a
// pooled connection that later reconnects never flushes again and its queries hang.
//
// The patch makes the flush settle the connection's queries with CONNECTION_CLOSED when the
// socket is gone, and teardown forget the cancelled flush. It changes nothing else, applies to
// every build of the package (ESM, CommonJS, Cloudflare), is idempotent, and only warns if the
// installed version no longer has the defect's code (then this script can go).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const MARKER = 'credit-service patch: porsager/postgres#1208';
const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'node_modules', 'postgres');

const GUARDED_FLUSH = {
  from: `  function nextWrite(fn) {
    const x = socket.write(chunk, fn)`,
  to: `  function nextWrite(fn) {
    if (!socket) { // ${MARKER}
      nextWriteTimer !== null && clearImmediate(nextWriteTimer)
      chunk = nextWriteTimer = null
      error(Errors.connection('CONNECTION_CLOSED', options))
      return false
    }
    const x = socket.write(chunk, fn)`,
};

const FORGOTTEN_FLUSH = {
  from: `    clearImmediate(nextWriteTimer)\n`,
  to: `    clearImmediate(nextWriteTimer), chunk = nextWriteTimer = null // ${MARKER}\n`,
};

let patched = 0;
for (const build of ['src', 'cjs/src', 'cf/src']) {
  const file = path.join(root, build, 'connection.js');
  if (!existsSync(file)) continue;
  let source = readFileSync(file, 'utf8');
  if (source.includes(MARKER)) continue;
  if (!source.includes(GUARDED_FLUSH.from) || source.split(FORGOTTEN_FLUSH.from).length !== 3) {
    console.warn(
      `patch-postgres: ${path.relative(process.cwd(), file)} differs from postgres 3.4.9; not patched (is the fix released?)`,
    );
    continue;
  }
  source = source.replace(GUARDED_FLUSH.from, GUARDED_FLUSH.to).replaceAll(FORGOTTEN_FLUSH.from, FORGOTTEN_FLUSH.to);
  writeFileSync(file, source);
  patched += 1;
}
if (patched > 0) console.log(`patch-postgres: guarded the deferred socket flush in ${patched} build(s) of postgres.js`);
