// Figure 2: every reservation on one organization (all serialized on its row lock) against the
// least a row-locking transaction costs on the same PostgreSQL: BEGIN; SELECT … FOR UPDATE;
// UPDATE; INSERT; COMMIT, on scratch tables of the bench database, at the same concurrency.
import postgres from 'postgres';
import { serverCpu, startCpuProbe } from '../cpu.ts';
import { GraphQLHttp } from '../graphql.ts';
import { runLoad, type PhaseResult, type Window } from '../load.ts';
import { LedgerClient, type Acknowledged } from '../operations.ts';
import type { RunningServer } from '../server.ts';
import type { BenchOrganization } from '../setup.ts';

export async function hotReserves(
  server: RunningServer,
  organization: BenchOrganization,
  clients: number,
  window: Window,
  acknowledged: Acknowledged,
  label: string,
): Promise<PhaseResult> {
  const http = new GraphQLHttp(server.url, clients);
  const ledger = new LedgerClient(http, acknowledged, `${label}-hot`);
  try {
    return await runLoad({ name: `${label}: reserves, 1 hot org`, clients, window, crashed: server.crashed, cpu: serverCpu(server) }, async (ctx) => {
      await ctx.call('reserve', () => ledger.reserve(organization));
    });
  } finally {
    http.close();
  }
}

/** The baseline's scratch tables: one row per caller of the baseline, and a log. */
export async function createScratchTables(databaseUrl: string): Promise<void> {
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    await sql`create table bench_hot_row (id int primary key, n bigint not null default 0)`;
    await sql`create table bench_hot_log (id bigserial primary key, row_id int not null, amount int not null, created_at timestamptz not null default now())`;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** `id` picks the hot row, so that two runs side by side (the quick run) do not share one. */
export async function sqlRowLock(databaseUrl: string, id: number, connections: number, clients: number, window: Window, label: string): Promise<PhaseResult> {
  const sql = postgres(databaseUrl, { max: connections, onnotice: () => {} });
  try {
    await sql`insert into bench_hot_row (id) values (${id}) on conflict do nothing`;
    return await runLoad({ name: `${label}: SQL row-lock transaction, ${connections} connections`, clients, window, cpu: () => startCpuProbe(null, databaseUrl) }, async (ctx) => {
      await ctx.call('transaction', async () => {
        await sql.begin(async (tx) => {
          await tx`select n from bench_hot_row where id = ${id} for update`;
          await tx`update bench_hot_row set n = n + 1 where id = ${id}`;
          await tx`insert into bench_hot_log (row_id, amount) values (${id}, 4)`;
        });
        return { outcome: 'ok' };
      });
    });
  } finally {
    await sql.end({ timeout: 5 });
  }
}
