// Figure 5: reserve latency as the journal grows. A fixed number of reserves, each client on its
// own organization, so the figure is the cost of one reserve rather than of waiting for a lock.
import { serverCpu } from '../cpu.ts';
import { GraphQLHttp } from '../graphql.ts';
import { runLoad, type PhaseResult } from '../load.ts';
import { LedgerClient, type Acknowledged } from '../operations.ts';
import type { RunningServer } from '../server.ts';
import type { BenchOrganization } from '../setup.ts';

export interface GrowthPoint {
  entriesAtStart: number;
  phase: PhaseResult;
}

export async function reserveLatency(
  server: RunningServer,
  organizations: BenchOrganization[],
  warmup: number,
  measured: number,
  entriesAtStart: number,
  acknowledged: Acknowledged,
  label: string,
): Promise<GrowthPoint> {
  const clients = organizations.length;
  const http = new GraphQLHttp(server.url, clients);
  const ledger = new LedgerClient(http, acknowledged, `${label}-growth`);
  try {
    const phase = await runLoad(
      { name: `${label}: reserves, ${entriesAtStart.toLocaleString('en-US')} entries`, clients, window: { kind: 'count', warmup, measured }, crashed: server.crashed, cpu: serverCpu(server) },
      async (ctx) => {
        await ctx.call('reserve', () => ledger.reserve(organizations[ctx.client % clients]!));
      },
    );
    return { entriesAtStart, phase };
  } finally {
    http.close();
  }
}
