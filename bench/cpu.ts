// Where a phase's CPU time went: the server process, the PostgreSQL backends serving the bench
// database (other databases on the same cluster, and PostgreSQL's shared background processes
// such as the WAL writer, are not counted), and the bench's own process (load and subscribers).
import { readFileSync } from 'node:fs';
import postgres from 'postgres';

const TICKS_PER_SECOND = 100; // Linux USER_HZ

/** User + system CPU time of a process, in ms; null when it is gone. */
export function processCpuMs(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_SECOND;
  } catch {
    return null;
  }
}

export interface CpuSplit {
  serverMs: number | null;
  postgresMs: number | null;
  benchMs: number;
}

export interface CpuProbe {
  stop(): Promise<CpuSplit>;
}

async function backendCpu(sql: postgres.Sql | null): Promise<Map<number, number> | null> {
  if (!sql) return null;
  try {
    const rows = await sql<
      Array<{ pid: number }>
    >`select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()`;
    const cpu = new Map<number, number>();
    for (const { pid } of rows) {
      const ms = processCpuMs(pid);
      if (ms !== null) cpu.set(pid, ms);
    }
    return cpu;
  } catch {
    return null;
  }
}

/**
 * Starts counting. `serverPid` is null when no server takes part (the SQL baseline);
 * `databaseUrl` is absent for PGlite, whose database runs inside the server process.
 */
export async function startCpuProbe(serverPid: number | null, databaseUrl: string | undefined): Promise<CpuProbe> {
  const sql = databaseUrl ? postgres(databaseUrl, { max: 1, onnotice: () => {} }) : null;
  const serverStart = serverPid === null ? null : processCpuMs(serverPid);
  const benchStart = process.cpuUsage();
  const backendsStart = await backendCpu(sql);
  return {
    async stop() {
      const backendsEnd = await backendCpu(sql);
      const bench = process.cpuUsage(benchStart);
      const serverEnd = serverPid === null ? null : processCpuMs(serverPid);
      await sql?.end({ timeout: 5 });
      let postgresMs: number | null = null;
      if (backendsStart && backendsEnd) {
        postgresMs = 0;
        // A backend that appeared during the phase counts from zero.
        for (const [pid, ms] of backendsEnd) postgresMs += ms - (backendsStart.get(pid) ?? 0);
      }
      return {
        serverMs: serverStart !== null && serverEnd !== null ? serverEnd - serverStart : null,
        postgresMs,
        benchMs: (bench.user + bench.system) / 1000,
      };
    },
  };
}

/** The probe for a phase against `server` (PostgreSQL backends only when it runs on PostgreSQL). */
export function serverCpu(server: { pid: number; spec: { databaseUrl?: string } }): () => Promise<CpuProbe> {
  return () => startCpuProbe(server.pid, server.spec.databaseUrl);
}
