import { randomUUID } from 'node:crypto';
import { systemClock } from '../clock.ts';
import type { Config } from '../config.ts';
import { getBalance } from '../ledger/balance.ts';
import { NotFoundError } from '../ledger/errors.ts';
import { grantCredits } from '../ledger/grants.ts';
import type { AccountType } from '../ledger/enums.ts';
import { withDatabase } from './environment.ts';
import { accountsTable, balanceJson } from './organizations.ts';
import { fields, table, type Output } from './output.ts';

export interface GrantOptions {
  org: string;
  type: AccountType;
  amount: number;
  reason: string;
  expires?: Date;
  key?: string;
}

/**
 * The same grant as the API's `grantCredits`: same checks, same journal entry, same balance
 * notification. Without --key each run is a new grant; with it a retry returns the first lot.
 */
export async function grantCommand(config: Config, out: Output, options: GrantOptions): Promise<void> {
  await withDatabase(config, {}, async ({ db }) => {
    const lot = await grantCredits(
      { db, clock: systemClock },
      {
        organizationId: options.org,
        type: options.type,
        amount: options.amount,
        reason: options.reason,
        expiresAt: options.expires ?? null,
        idempotencyKey: options.key ?? `cli-${randomUUID()}`,
      },
    );
    out.print(
      {
        id: lot.id,
        organizationId: lot.organizationId,
        type: lot.type,
        granted: lot.granted,
        expiresAt: lot.expiresAt,
        idempotencyKey: lot.sourceKey,
      },
      () =>
        out.line(
          fields([
            ['lot', lot.id],
            ['organization', lot.organizationId],
            ['type', lot.type],
            ['granted', lot.granted],
            ['expires', lot.expiresAt ?? 'never'],
            ['idempotency key', lot.sourceKey],
          ]),
        ),
    );
  });
}

export async function balanceCommand(config: Config, out: Output, organizationId: string): Promise<void> {
  await withDatabase(config, {}, async ({ db }) => {
    const balance = await getBalance(db, organizationId, systemClock.now());
    if (!balance) throw new NotFoundError('No such organization.');
    out.print(balanceJson(balance), () => {
      out.line(accountsTable(balance));
      const lots = balance.accounts.flatMap((account) => account.lots);
      out.line();
      out.line(
        lots.length === 0
          ? 'No lots hold credits.'
          : table(
              ['LOT', 'ACCOUNT', 'AVAILABLE', 'RESERVED', 'EXPIRES'],
              lots.map((lot) => [lot.id, lot.type, lot.available, lot.reserved, lot.expiresAt ?? 'never']),
            ),
      );
    });
  });
}
