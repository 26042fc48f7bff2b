import type { Clock } from '../clock.ts';
import type { Db } from '../db/client.ts';
import type { Balance } from './balance.ts';

/** What every ledger operation needs: where the money lives and what time it is. */
export interface LedgerContext {
  db: Db;
  clock: Clock;
  /**
   * Told the balance a reservation or settlement left, as of its own transaction, when the write
   * knows it without reading it again (the API answers with it, saving a read per request).
   */
  onBalance?: (balance: Balance) => void;
}
