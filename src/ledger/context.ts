import type { Clock } from '../clock.ts';
import type { Db } from '../db/client.ts';

/** What every ledger operation needs: where the money lives and what time it is. */
export interface LedgerContext {
  db: Db;
  clock: Clock;
}
