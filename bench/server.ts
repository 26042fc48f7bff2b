// The server under test, started as production starts it, in a child process of its own.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { processCpuMs } from './cpu.ts';

export const root = fileURLToPath(new URL('..', import.meta.url));

function packageScripts(): Record<string, string> {
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { scripts?: Record<string, string> };
  return pkg.scripts ?? {};
}

/**
 * The one place that says how the server is started: the command of `npm start`, run directly
 * with this Node binary so the child's pid is the server's own (its RSS and CPU are read from
 * /proc, and `npm` in between would orphan the server on a signal). Anything other than
 * `node <args>` must be spelled out here. `npm start`'s `prestart` step (the build) is run once
 * beforehand by `prepareServer()`.
 *
 * `BENCH_SERVER_IMPORT=<module>` preloads one more module into the server (`--import`, with tsx
 * for a .ts module), for proving that the checks catch a broken server, e.g.
 * test/crash/fault-500.ts with CREDITS_TEST_FAULT_500_RATE=0.05 (variables named CREDITS_TEST_*
 * are passed to the server).
 */
export function serverCommand(): { command: string; args: string[] } {
  const start = packageScripts().start ?? '';
  const words = start.trim().split(/\s+/);
  if (words[0] !== 'node' || words.length < 2 || /[|&;<>$`'"]/.test(start)) {
    throw new Error(
      `bench/server.ts cannot run npm start (${JSON.stringify(start)}); teach serverCommand() how to start the server`,
    );
  }
  const args = words.slice(1);
  const extra = process.env.BENCH_SERVER_IMPORT;
  if (extra) {
    const preload = ['--import', path.resolve(root, extra)];
    if (extra.endsWith('.ts') && !args.includes('tsx')) preload.unshift('--import', 'tsx');
    args.splice(args.length - 1, 0, ...preload);
  }
  return { command: process.execPath, args };
}

function newestMtimeMs(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtimeMs(full) : statSync(full).mtimeMs);
  }
  return newest;
}

/**
 * Runs `npm start`'s `prestart` step (today: compiling src/ to dist/) unless the output of the
 * start command's entry folder is already newer than everything in src/. Returns what it did.
 */
export async function prepareServer(): Promise<string> {
  const prestart = packageScripts().prestart;
  if (!prestart) return 'npm start has no prestart step';
  const { args } = serverCommand();
  const entry = path.resolve(root, args[args.length - 1]!);
  const built = path.dirname(entry);
  const sources = path.join(root, 'src');
  if (existsSync(entry) && existsSync(sources) && newestMtimeMs(built) >= newestMtimeMs(sources)) {
    return `${path.relative(root, built)}/ is newer than src/: not rebuilt`;
  }
  const started = Date.now();
  await new Promise<void>((resolve, reject) => {
    execFile(
      'npm',
      ['run', '--silent', 'prestart'],
      { cwd: root, timeout: 600_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) =>
        error
          ? reject(new Error(`npm run prestart failed: ${tail(`${stdout}\n${stderr}`) || error.message}`))
          : resolve(),
    );
  });
  return `ran npm start's prestart (${prestart}) in ${((Date.now() - started) / 1000).toFixed(1)} s`;
}

export type Limiter = 'production' | 'off';

export interface ServerSpec {
  /** For messages: "main-on", "pglite-off", … */
  name: string;
  /** PostgreSQL, or, when absent, embedded PGlite in `dataDir`. */
  databaseUrl?: string;
  dataDir?: string;
  /** `production`: the production defaults; `off`: MUTATION_RATE_LIMIT, SERVICE_MUTATION_RATE_LIMIT and ORGANIZATION_RATE_LIMIT 0. */
  limiter: Limiter;
  authSecret: string;
}

export interface RunningServer {
  spec: ServerSpec;
  url: string;
  pid: number;
  /** Resident memory of the server process in KiB, from /proc/<pid>/status (null once gone). */
  rssKb(): number | null;
  /** How long the server took from spawn to its start-up line. */
  startMs: number;
  /** CPU time the server process used so far (null once gone). */
  cpuMs(): number | null;
  /** Set when the process exited without being asked to. */
  crashed(): string | null;
  /** Lines the server wrote to stderr (its log of failures). */
  stderrLines(): string[];
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code or signal. */
  stop(graceMs?: number): Promise<number | string | null>;
}

const children = new Set<ChildProcess>();

/** Kills every server still running; for the runner's exit paths. */
export function killAllServers(): void {
  for (const child of children) child.kill('SIGKILL');
}

function childEnvironment(spec: ServerSpec): NodeJS.ProcessEnv {
  // Only what the server needs: nothing of the runner's own DATABASE_URL or rate limits leaks in.
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '',
    NODE_ENV: 'production',
    AUTH_SECRET: spec.authSecret,
    PORT: '0',
  };
  if (spec.databaseUrl) env.DATABASE_URL = spec.databaseUrl;
  else env.DATA_DIR = spec.dataDir;
  if (spec.limiter === 'off') {
    env.MUTATION_RATE_LIMIT = '0';
    env.SERVICE_MUTATION_RATE_LIMIT = '0';
    env.ORGANIZATION_RATE_LIMIT = '0';
  }
  for (const [name, value] of Object.entries(process.env)) {
    if (name.startsWith('CREDITS_TEST_')) env[name] = value;
  }
  return env;
}

export function readRssKb(pid: number): number | null {
  try {
    const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
}

/** Starts the server and waits for its "Credits API on http://localhost:<port>/graphql" line. */
export async function startServer(spec: ServerSpec, timeoutMs = 180_000): Promise<RunningServer> {
  const { command, args } = serverCommand();
  const spawnedAt = Date.now();
  const child = spawn(command, args, { cwd: root, env: childEnvironment(spec), stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  let stopping = false;
  let crashed: string | null = null;
  const exited = new Promise<number | string | null>((resolve) => {
    child.once('exit', (code, signal) => {
      children.delete(child);
      if (!stopping) crashed = `server ${spec.name} exited unexpectedly (${signal ?? code}): ${tail(stderr || stdout)}`;
      resolve(signal ?? code);
    });
  });
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    if (stdout.length < 100_000) stdout += chunk;
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    if (stderr.length < 100_000) stderr += chunk;
  });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`server ${spec.name} did not start within ${timeoutMs / 1000} s: ${tail(stderr || stdout)}`));
    }, timeoutMs);
    const onData = () => {
      const match = /Credits API on http:\/\/localhost:(\d+)\/graphql/.exec(stdout);
      if (match) {
        clearTimeout(timer);
        child.stdout!.off('data', onData);
        resolve(Number(match[1]));
      }
    };
    child.stdout!.on('data', onData);
    void exited.then((how) => {
      clearTimeout(timer);
      reject(new Error(`server ${spec.name} exited (${how}) during start-up: ${tail(stderr || stdout)}`));
    });
  });
  const pid = child.pid!;
  return {
    spec,
    url: `http://127.0.0.1:${port}/graphql`,
    pid,
    startMs: Date.now() - spawnedAt,
    rssKb: () => readRssKb(pid),
    cpuMs: () => processCpuMs(pid),
    crashed: () => crashed,
    stderrLines: () => stderr.split('\n').filter((line) => line.trim() !== ''),
    async stop(graceMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      stopping = true;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const how = await exited;
      clearTimeout(timer);
      return how;
    },
  };
}

function tail(text: string): string {
  const lines = text.trim().split('\n');
  return lines.slice(-3).join(' | ').slice(0, 600);
}

/** Starts a server on first use (or ahead of time) and stops it when asked; restartable. */
export class Launcher {
  private running: Promise<RunningServer> | null = null;

  constructor(
    readonly spec: ServerSpec,
    private readonly onStopped: (server: RunningServer, how: number | string | null, cpuMs: number | null) => void,
  ) {}

  start(): Promise<RunningServer> {
    if (!this.running) {
      this.running = startServer(this.spec);
      this.running.catch(() => {}); // awaited by whoever uses it; never an unhandled rejection
    }
    return this.running;
  }

  async stop(): Promise<void> {
    const running = this.running;
    this.running = null;
    const server = await running?.catch(() => null);
    if (!server) return;
    const cpuMs = server.cpuMs();
    this.onStopped(server, await server.stop(), cpuMs);
  }
}

/**
 * The server's resident memory once it is quiet: the least of samples taken every 100 ms for
 * `ms`, so that garbage not yet collected counts as little as it can.
 */
export async function quietRssKb(server: RunningServer, ms: number): Promise<number | null> {
  let least: number | null = null;
  const until = Date.now() + ms;
  do {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const rss = server.rssKb();
    if (rss !== null && (least === null || rss < least)) least = rss;
  } while (Date.now() < until);
  return least;
}
