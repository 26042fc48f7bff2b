import type { Db, Tx } from '../db/client.ts';
import type { EntryDraft } from './journal.ts';

/**
 * Tells observers (the metrics) of credit movements once their transaction has committed, never
 * of one that rolled back. The journal notes each posting against its transaction; the
 * transaction runner announces the notes after COMMIT. With no observer registered, noting costs
 * nothing. An observer must not throw into the ledger: its errors are swallowed here.
 */
export type MovementObserver = (db: Db, movements: readonly EntryDraft[]) => void;

const observers = new Set<MovementObserver>();
const posted = new WeakMap<Tx, EntryDraft[]>();

/** Registers `observer`; the returned function removes it. */
export function observeMovements(observer: MovementObserver): () => void {
  observers.add(observer);
  return () => observers.delete(observer);
}

/** Called by the journal for every posting, inside its transaction. */
export function notePosted(tx: Tx, drafts: readonly EntryDraft[]): void {
  if (observers.size === 0) return;
  const list = posted.get(tx);
  if (list) list.push(...drafts);
  else posted.set(tx, [...drafts]);
}

/** Called by the transaction runner after `tx` committed on `db`. */
export function announceCommitted(db: Db, tx: Tx): void {
  const movements = posted.get(tx);
  if (!movements) return;
  posted.delete(tx);
  for (const observer of observers) {
    try {
      observer(db, movements);
    } catch {
      // Observing must never change the outcome of a committed write.
    }
  }
}
