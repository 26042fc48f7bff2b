import postgres from 'postgres';

export interface HeldLock {
  /** Commits the holding transaction and closes its connection (once, however often called). */
  release(): Promise<void>;
}

/**
 * Takes an organization's row lock in a transaction on a connection of its own (PostgreSQL), as
 * another process's writer would, and holds it until released.
 */
export async function holdOrganizationLock(url: string, organizationId: string): Promise<HeldLock> {
  const client = postgres(url, { max: 1, onnotice: () => {} });
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let locked!: () => void;
  const holding = new Promise<void>((resolve) => (locked = resolve));
  const transaction = client.begin(async (tx) => {
    await tx`select id from organizations where id = ${organizationId} for update`;
    locked();
    await released;
  });
  await Promise.race([holding, transaction]);
  let ended: Promise<void> | null = null;
  return {
    release() {
      ended ??= (async () => {
        release();
        await transaction;
        await client.end();
      })();
      return ended;
    },
  };
}
