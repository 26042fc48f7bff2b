import type { Db, Tx } from '../db/client.ts';
import type { EntryDraft } from './journal.ts';

/**
 * Tells observers (the metrics) of credit movements once their transaction has committed, never
 * of one that rolled back. The journal notes each posting against its transaction; the
 * transaction runner announces the notes after COMMIT. With no observer registered, noting costs
 * nothing. An observer must not throw into the ledger: its errors are swallowed here.
 */
export type MovementObserver = (db: Db, movements: readonly EntryDraft[], alertsFired: number) => void;

interface Noted {
  drafts: EntryDraft[];
  /** Balance alert events the transaction wrote. */
  alertsFired: number;
}

const observers = new Set<MovementObserver>();
const posted = new WeakMap<Tx, Noted>();

/** Registers `observer`; the returned function removes it. */
export function observeMovements(observer: MovementObserver): () => void {
  observers.add(observer);
  return () => observers.delete(observer);
}

/** Called by the journal for every posting, inside its transaction. */
export function notePosted(tx: Tx, drafts: readonly EntryDraft[]): void {
  if (observers.size === 0) return;
  const noted = posted.get(tx);
  if (noted) noted.drafts.push(...drafts);
  else posted.set(tx, { drafts: [...drafts], alertsFired: 0 });
}

/** Called for every alert evaluation that wrote events, inside its transaction. */
export function noteAlertsFired(tx: Tx, count: number): void {
  if (observers.size === 0 || count === 0) return;
  const noted = posted.get(tx);
  if (noted) noted.alertsFired += count;
  else posted.set(tx, { drafts: [], alertsFired: count });
}

/** Called by the transaction runner after `tx` committed on `db`. */
export function announceCommitted(db: Db, tx: Tx): void {
  const noted = posted.get(tx);
  if (!noted) return;
  posted.delete(tx);
  for (const observer of observers) {
    try {
      observer(db, noted.drafts, noted.alertsFired);
    } catch {
      // Observing must never change the outcome of a committed write.
    }
  }
}
