// The real server as production runs it, in a process of its own: `node --import tsx src/main.ts`
// by default, or any other command line (the compiled dist/main.js, a preloaded test switch).
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '../..');
const START_LINE = /Credits API on http:\/\/localhost:(\d+)\/graphql/;
// Starting a server (tsx compiling the sources, then migrating) has taken over 30 s on a loaded
// 2-core machine; this only bounds a start that never comes.
export const SERVER_START_MS = 90_000;

export interface ServerProcessOptions {
  /** The whole environment of the process: pass `...process.env` explicitly to inherit this one's. */
  env: Record<string, string | undefined>;
  /** Node's arguments; by default the sources through tsx, as `npm run dev` runs them. */
  args?: string[];
}

export interface ServerProcess {
  child: ChildProcess;
  /** Everything written to stdout so far. */
  stdout(): string;
  /** Everything written to stderr so far. */
  stderr(): string;
  /** stdout and stderr interleaved as they arrived. */
  output(): string;
  /** The exit code, or the signal that ended the process. */
  exited: Promise<number | NodeJS.Signals>;
}

export interface StartedServer extends ServerProcess {
  port: number;
  /** `http://127.0.0.1:<port>`, for /health, /ready, /metrics and WebSocket URLs. */
  baseUrl: string;
  /** The GraphQL endpoint. */
  url: string;
}

/** Processes spawned by this test file and not yet exited, so an `afterAll` can make sure none outlives it. */
const running = new Set<ChildProcess>();

/** Spawns the server and records what it writes; nothing waits for it to serve (see `startServer`). */
export function spawnServer(options: ServerProcessOptions): ServerProcess {
  const args = options.args ?? ['--import', 'tsx', 'src/main.ts'];
  const child = spawn(process.execPath, args, { cwd: ROOT, env: options.env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  // Registered at once, so that an exit during start-up is never missed.
  const exited = new Promise<number | NodeJS.Signals>((resolve) =>
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve(signal ?? (code as number));
    }),
  );
  let stdout = '';
  let stderr = '';
  let output = '';
  child.stdout!.on('data', (chunk) => {
    stdout += chunk;
    output += chunk;
  });
  child.stderr!.on('data', (chunk) => {
    stderr += chunk;
    output += chunk;
  });
  return { child, stdout: () => stdout, stderr: () => stderr, output: () => output, exited };
}

export interface StartOptions extends ServerProcessOptions {
  /** How long the start may take before the process is killed and the start fails. */
  startMs?: number;
  /** What stdout must show before the server counts as started; by default its start-up line. */
  ready?: (stdout: string) => boolean;
}

/**
 * Spawns the server and resolves once its stdout shows the start-up line (and `ready`, when
 * given). A process that exits first fails the start; one that is not ready within `startMs` is
 * killed with SIGKILL, so that no half-started server is left behind.
 */
export async function startServer(options: StartOptions): Promise<StartedServer> {
  const server = spawnServer(options);
  const startMs = options.startMs ?? SERVER_START_MS;
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      server.child.kill('SIGKILL');
      reject(new Error(`server did not start within ${startMs / 1000} s:\n${server.output()}`));
    }, startMs);
    const check = () => {
      const match = START_LINE.exec(server.stdout());
      if (match && (options.ready?.(server.stdout()) ?? true)) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    };
    server.child.stdout!.on('data', check);
    void server.exited.then((end) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${end}) during start-up:\n${server.output()}`));
    });
  });
  const baseUrl = `http://127.0.0.1:${port}`;
  return { ...server, port, baseUrl, url: `${baseUrl}/graphql` };
}

/**
 * Sends SIGTERM and resolves with how the process ended. One still running after `withinMs` is
 * killed with SIGKILL and fails the test with a clear message instead of the test's timeout.
 */
export async function stopServer(server: ServerProcess, withinMs: number): Promise<number | NodeJS.Signals> {
  server.child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const end = await Promise.race([
    server.exited,
    new Promise<'timeout'>((resolve) => {
      timer = setTimeout(resolve, withinMs, 'timeout');
    }),
  ]);
  clearTimeout(timer);
  if (end === 'timeout') {
    server.child.kill('SIGKILL');
    throw new Error(`server did not exit within ${withinMs / 1000} s of SIGTERM:\n${server.output()}`);
  }
  return end;
}

/** Kills (SIGKILL) every server process this file started that is still running, and waits for each to exit. */
export async function killRunningServers(): Promise<void> {
  const children = [...running];
  for (const child of children) child.kill('SIGKILL');
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) =>
          child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve()),
        ),
    ),
  );
}

/**
 * The server on a free port of 127.0.0.1 against `databaseUrl`, with its own data folder and
 * secret, as `nodeEnv` runs it (production: its defaults, rate limits and required scopes included).
 */
export function startServerOn(options: {
  databaseUrl: string;
  dataDir: string;
  secret: string;
  nodeEnv: 'production' | 'test';
  /** More environment, over the above. */
  env?: Record<string, string>;
}): Promise<StartedServer> {
  return startServer({
    env: {
      ...process.env,
      DATABASE_URL: options.databaseUrl,
      AUTH_SECRET: options.secret,
      PORT: '0',
      HOST: '127.0.0.1',
      DATA_DIR: options.dataDir,
      NODE_ENV: options.nodeEnv,
      ...options.env,
    },
  });
}
