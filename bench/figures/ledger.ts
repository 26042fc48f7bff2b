// Figure 1 (and 6 on PGlite): reserve+capture over many organizations against the transport
// alone ({ __typename }), with the same client, concurrency and token.
import { serverCpu } from '../cpu.ts';
import { GraphQLHttp } from '../graphql.ts';
import { runLoad, type PhaseResult, type Window } from '../load.ts';
import { reserveThenCapture, type Acknowledged, LedgerClient } from '../operations.ts';
import type { RunningServer } from '../server.ts';
import type { BenchOrganization } from '../setup.ts';

export interface LedgerVsTransport {
  transport: PhaseResult;
  ledger: PhaseResult;
}

export async function ledgerVsTransport(
  server: RunningServer,
  organizations: BenchOrganization[],
  clients: number,
  window: Window,
  acknowledged: Acknowledged,
  label: string,
): Promise<LedgerVsTransport> {
  const http = new GraphQLHttp(server.url, clients);
  const ledger = new LedgerClient(http, acknowledged, `${label}-spread`);
  try {
    const token = organizations[0]!.serviceToken;
    const transport = await runLoad({ name: `${label}: { __typename }`, clients, window, crashed: server.crashed, cpu: serverCpu(server) }, async (ctx) => {
      await ctx.call('typename', () => ledger.typename(token));
    });
    const spread = await runLoad(
      { name: `${label}: reserve+capture, ${organizations.length} orgs`, clients, window, crashed: server.crashed, sampleRss: server.rssKb, cpu: serverCpu(server) },
      (ctx) => reserveThenCapture(ctx, ledger, organizations[ctx.iteration % organizations.length]!),
    );
    return { transport, ledger: spread };
  } finally {
    http.close();
  }
}

/** Reserves alone over the organizations (figure 4's throughput, with or without subscribers). */
export async function spreadReserves(
  server: RunningServer,
  organizations: BenchOrganization[],
  clients: number,
  window: Window,
  acknowledged: Acknowledged,
  label: string,
): Promise<PhaseResult> {
  const http = new GraphQLHttp(server.url, clients);
  const ledger = new LedgerClient(http, acknowledged, `${label}-reserves`);
  try {
    return await runLoad({ name: `${label}: reserves, ${organizations.length} orgs`, clients, window, crashed: server.crashed, cpu: serverCpu(server) }, async (ctx) => {
      await ctx.call('reserve', () => ledger.reserve(organizations[ctx.iteration % organizations.length]!));
    });
  } finally {
    http.close();
  }
}
