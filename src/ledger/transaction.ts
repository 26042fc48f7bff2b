import type { Db, Tx } from '../db/client.ts';
import { DEADLOCK_DETECTED, SERIALIZATION_FAILURE, sqlState } from '../db/errors.ts';
import { announceCommitted } from './movements.ts';

const RETRIES_MAX = 5;

/**
 * Runs `work` in one transaction. The design takes locks in one fixed order (organization row
 * first, then its lots), so deadlocks should not happen; should the database still report a
 * serialization failure or deadlock, the whole transaction is retried rather than surfaced.
 */
export async function inTransaction<T>(db: Db, work: (tx: Tx) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      let committed: Tx | undefined;
      const result = await db.transaction((tx) => {
        committed = tx;
        return work(tx);
      });
      // Observers (metrics) hear of the transaction's credit movements only once it committed.
      if (committed) announceCommitted(db, committed);
      return result;
    } catch (error) {
      const state = sqlState(error);
      const retriable = state === SERIALIZATION_FAILURE || state === DEADLOCK_DETECTED;
      if (!retriable || attempt >= RETRIES_MAX) throw error;
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 10 * attempt));
    }
  }
}
