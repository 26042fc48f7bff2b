import type { Db, Tx } from '../db/client.ts';
import { isConnectionError, isSessionTimeout } from '../db/errors.ts';
import type { Balance } from './balance.ts';
import type { LedgerContext } from './context.ts';
import { CreditError } from './errors.ts';
import { inTransaction } from './transaction.ts';

/**
 * Every write that takes an organization's lock waits for its turn here first, in memory and
 * without a database connection, so a process runs at most one transaction per organization at a
 * time and that transaction is the only one of the organization's that can wait on its lock.
 * Without this, a burst of one organization's writes would fill the connection pool with
 * transactions queued on one row lock, and every other organization on the process would wait
 * for a connection (and could time the burst by its own latency).
 *
 * Work comes in two shapes. A *turn* is one transaction of its own (a grant, a purchase, a plan
 * change, a sweep item). A *lane* gathers requests of one kind (reservations, settlements) that
 * arrived one after another while the organization was busy and writes them together, under one
 * lock and in one transaction, each request keeping its own answer.
 */

/** One request in a lane's batch, with the context it came with. */
export interface LaneRequest {
  ctx: LedgerContext;
}

/** What a lane's transaction answers: one outcome per request, in order, and the balance left. */
export interface LaneOutcome<O> {
  outcomes: Array<O | CreditError>;
  /** The balance the batch left, when it knows it without reading again. */
  balance: Balance | null;
}

/** A kind of request that is written in batches. */
export interface Lane<I extends LaneRequest, O> {
  /** The most requests one batch takes, so that one transaction stays short. */
  readonly sizeMax: number;
  /** Writes the batch in the transaction given, answering each request. */
  write(tx: Tx, batch: I[]): Promise<LaneOutcome<O>>;
}

interface LaneEntry {
  lane: Lane<LaneRequest, unknown>;
  request: LaneRequest;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

interface TurnEntry {
  lane: null;
  run(): Promise<void>;
}

type Entry = LaneEntry | TurnEntry;

interface OrganizationQueue {
  entries: Entry[];
  draining: boolean;
}

// One set of queues per database handle (a test may hand in its own database).
const queuesByDb = new WeakMap<Db, Map<string, OrganizationQueue>>();

/** Runs `work` (one transaction of the organization's) once every earlier write of it finished. */
export function inOrganizationTurn<T>(db: Db, organizationId: string, work: () => Promise<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    enqueue(db, organizationId, {
      lane: null,
      run: () => work().then(resolve, reject),
    });
  });
}

/**
 * Runs `work` in a transaction of its own, in the organization's turn: the shape of every write
 * that locks one organization and is not batched.
 */
export function inOrganizationTransaction<T>(db: Db, organizationId: string, work: (tx: Tx) => Promise<T>): Promise<T> {
  return inOrganizationTurn(db, organizationId, () => inTransaction(db, work));
}

/**
 * Adds a request to the organization's lane: the first request of an idle organization is
 * written at once (no added latency); requests arriving meanwhile are written together next.
 */
export function joinLane<I extends LaneRequest, O>(lane: Lane<I, O>, organizationId: string, request: I): Promise<O> {
  return new Promise<O>((resolve, reject) => {
    enqueue(request.ctx.db, organizationId, {
      lane: lane as unknown as Lane<LaneRequest, unknown>,
      request,
      resolve: resolve as (value: unknown) => void,
      reject,
    });
  });
}

function enqueue(db: Db, organizationId: string, entry: Entry): void {
  let queues = queuesByDb.get(db);
  if (!queues) {
    queues = new Map();
    queuesByDb.set(db, queues);
  }
  let queue = queues.get(organizationId);
  if (!queue) {
    queue = { entries: [], draining: false };
    queues.set(organizationId, queue);
  }
  queue.entries.push(entry);
  if (!queue.draining) void drain(queues, organizationId, queue);
}

async function drain(queues: Map<string, OrganizationQueue>, organizationId: string, queue: OrganizationQueue) {
  queue.draining = true;
  try {
    while (queue.entries.length > 0) {
      const head = queue.entries[0]!;
      if (head.lane === null) {
        queue.entries.shift();
        // A turn settles its own promise; nothing it throws stops the queue.
        await head.run().catch(() => {});
        continue;
      }
      await writeBatch(head.lane, takeBatch(queue, head.lane));
    }
  } finally {
    queue.draining = false;
    if (queue.entries.length === 0) queues.delete(organizationId);
    else void drain(queues, organizationId, queue);
  }
}

/** The requests of `lane` at the head of the queue, in arrival order, up to the lane's size. */
function takeBatch(queue: OrganizationQueue, lane: Lane<LaneRequest, unknown>): LaneEntry[] {
  let count = 0;
  while (count < queue.entries.length && count < lane.sizeMax && queue.entries[count]!.lane === lane) count += 1;
  return queue.entries.splice(0, count) as LaneEntry[];
}

/**
 * Writes one batch in one transaction. Should that transaction fail as a whole for any reason but
 * an unreachable database or a session timeout, each request is tried again in a transaction of
 * its own, so that whatever one request runs into answers that request only.
 */
async function writeBatch(lane: Lane<LaneRequest, unknown>, batch: LaneEntry[]): Promise<void> {
  const db = batch[0]!.request.ctx.db;
  let result: LaneOutcome<unknown>;
  try {
    result = await inTransaction(db, (tx) =>
      lane.write(
        tx,
        batch.map((entry) => entry.request),
      ),
    );
  } catch (error) {
    // An unreachable database or a session timeout (say, a lock held too long by another
    // process) would only repeat for each request alone, one timeout after another.
    if (batch.length === 1 || isConnectionError(error) || isSessionTimeout(error)) {
      for (const entry of batch) entry.reject(error);
      return;
    }
    for (const entry of batch) await writeBatch(lane, [entry]);
    return;
  }
  batch.forEach((entry, i) => {
    const outcome = result.outcomes[i];
    if (outcome instanceof CreditError) {
      entry.reject(outcome);
      return;
    }
    // Only once committed: the balance a rolled-back write computed never existed.
    if (result.balance) entry.request.ctx.onBalance?.(result.balance);
    entry.resolve(outcome);
  });
}
