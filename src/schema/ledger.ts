import { InvalidInputError } from '../ledger/errors.ts';
import { listLedgerEntries, type LedgerEntry } from '../ledger/journal.ts';
import { LEDGER_PAGE_DEFAULT, LEDGER_PAGE_MAX } from '../ledger/limits.ts';
import { requireIntInRange } from '../ledger/validation.ts';
import { asQueryInput, authorizeOrganization } from './authorization.ts';
import { builder } from './builder.ts';

const LedgerEntryKindEnum = builder.enumType('LedgerEntryKind', {
  values: {
    GRANT: { description: 'Credits added to a lot.' },
    RESERVE: { description: 'Credits pre-deducted for a reservation.' },
    CAPTURE: { description: 'Held credits consumed by a successful generation.' },
    REFUND: { description: 'Held credits returned to their lot.' },
    EXPIRE: { description: 'Credits that left the balance because their lot expired.' },
  } as const,
});

const LedgerEntryType = builder.objectRef<LedgerEntry>('LedgerEntry').implement({
  description: 'One append-only movement of credits within one lot.',
  fields: (t) => ({
    id: t.exposeID('id'),
    kind: t.field({ type: LedgerEntryKindEnum, resolve: (entry) => entry.kind }),
    lotId: t.exposeID('lotId'),
    reservationId: t.exposeID('reservationId', { nullable: true }),
    amount: t.exposeInt('availableChange', {
      description: 'Signed change to the available balance: + for GRANT and REFUND, - for RESERVE and EXPIRE, 0 for CAPTURE.',
    }),
    reservedChange: t.exposeInt('reservedChange', {
      description: 'Signed change to the reserved balance: + for RESERVE, - for CAPTURE and REFUND.',
    }),
    reason: t.exposeString('reason', { nullable: true }),
    createdAt: t.field({ type: 'DateTime', resolve: (entry) => entry.createdAt }),
  }),
});

const LedgerEntryEdge = builder.objectRef<LedgerEntry>('LedgerEntryEdge').implement({
  fields: (t) => ({
    cursor: t.string({ resolve: (entry) => encodeCursor(entry.id) }),
    node: t.field({ type: LedgerEntryType, resolve: (entry) => entry }),
  }),
});

interface PageInfo {
  hasNextPage: boolean;
  hasPreviousPage: boolean;
  startCursor: string | null;
  endCursor: string | null;
}

const PageInfoType = builder.objectRef<PageInfo>('PageInfo').implement({
  fields: (t) => ({
    hasNextPage: t.exposeBoolean('hasNextPage'),
    hasPreviousPage: t.exposeBoolean('hasPreviousPage'),
    startCursor: t.exposeString('startCursor', { nullable: true }),
    endCursor: t.exposeString('endCursor', { nullable: true }),
  }),
});

interface LedgerConnection {
  edges: LedgerEntry[];
  pageInfo: PageInfo;
}

const LedgerEntryConnection = builder.objectRef<LedgerConnection>('LedgerEntryConnection').implement({
  fields: (t) => ({
    edges: t.field({ type: [LedgerEntryEdge], resolve: (connection) => connection.edges }),
    pageInfo: t.field({ type: PageInfoType, resolve: (connection) => connection.pageInfo }),
  }),
});

const CURSOR_PREFIX = 'ledger:';

function encodeCursor(id: number): string {
  return Buffer.from(`${CURSOR_PREFIX}${id}`).toString('base64url');
}

function decodeCursor(cursor: string): number {
  const text = Buffer.from(cursor, 'base64url').toString('utf8');
  const id = text.startsWith(CURSOR_PREFIX) ? Number(text.slice(CURSOR_PREFIX.length)) : Number.NaN;
  if (!Number.isSafeInteger(id) || id < 1) throw new InvalidInputError('after is not a cursor from this ledger.', 'after');
  return id;
}

builder.queryField('ledger', (t) =>
  t.field({
    type: LedgerEntryConnection,
    description: "The organization's journal, newest first.",
    args: {
      organizationId: t.arg.id({ required: true }),
      first: t.arg.int({ required: false, description: `Page size, 1 to ${LEDGER_PAGE_MAX} (default ${LEDGER_PAGE_DEFAULT}).` }),
      after: t.arg.string({ required: false }),
    },
    resolve: (_root, args, ctx) =>
      asQueryInput(async () => {
        authorizeOrganization(ctx, String(args.organizationId), 'member');
        const first = requireIntInRange(args.first ?? LEDGER_PAGE_DEFAULT, 1, LEDGER_PAGE_MAX, 'first');
        const beforeId = args.after ? decodeCursor(args.after) : null;
        const page = await listLedgerEntries(ctx.db, String(args.organizationId).toLowerCase(), first, beforeId);
        const firstEntry = page.entries[0];
        const lastEntry = page.entries.at(-1);
        return {
          edges: page.entries,
          pageInfo: {
            hasNextPage: page.hasNextPage,
            hasPreviousPage: beforeId !== null,
            startCursor: firstEntry ? encodeCursor(firstEntry.id) : null,
            endCursor: lastEntry ? encodeCursor(lastEntry.id) : null,
          },
        };
      }),
  }),
);
