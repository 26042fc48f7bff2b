import { ENTRY_KINDS, type EntryKind } from '../ledger/enums.ts';
import { InvalidInputError } from '../ledger/errors.ts';
import { listLedgerEntries, type LedgerEntry } from '../ledger/journal.ts';
import { LEDGER_PAGE_DEFAULT, LEDGER_PAGE_MAX } from '../ledger/limits.ts';
import { findOrganization } from '../ledger/organizations.ts';
import { requireIntInRange } from '../ledger/validation.ts';
import { allow, asQueryInput, authorizeOrganization, noSuchOrganization } from './authorization.ts';
import { builder } from './builder.ts';

// Every kind must be described (the Record says so); the order is the database enum's.
const ENTRY_KIND_DESCRIPTIONS: Record<EntryKind, string> = {
  GRANT: 'Credits added to a lot.',
  RESERVE: 'Credits pre-deducted for a reservation.',
  CAPTURE: 'Held credits consumed by a successful generation.',
  REFUND: 'Held credits returned to their lot.',
  EXPIRE: 'Credits that left the balance because their lot expired.',
};

const LedgerEntryKindEnum = builder.enumType('LedgerEntryKind', {
  values: Object.fromEntries(
    ENTRY_KINDS.map((kind) => [kind, { description: ENTRY_KIND_DESCRIPTIONS[kind] }]),
  ) as Record<EntryKind, { description: string }>,
});

const LedgerEntryType = builder.objectRef<LedgerEntry>('LedgerEntry').implement({
  description: 'One append-only movement of credits within one lot.',
  fields: (t) => ({
    id: t.id({
      description: "Opaque; names the entry by its organization and its place in that organization's journal.",
      resolve: (entry) => encodeEntryId(entry),
    }),
    kind: t.field({ type: LedgerEntryKindEnum, resolve: (entry) => entry.kind }),
    lotId: t.exposeID('lotId'),
    reservationId: t.exposeID('reservationId', { nullable: true }),
    amount: t.exposeInt('availableChange', {
      description:
        'Signed change to the available balance: + for GRANT and REFUND, - for RESERVE and EXPIRE, 0 for CAPTURE.',
    }),
    reservedChange: t.exposeInt('reservedChange', {
      description: 'Signed change to the reserved balance: + for RESERVE, - for CAPTURE and REFUND.',
    }),
    reason: t.exposeString('reason', { nullable: true }),
    createdAt: t.field({ type: 'DateTime', resolve: (entry) => entry.createdAt }),
  }),
});

// The relay plugin makes the connection, its edge and PageInfo; the names are the ones clients
// already use. Pages, cursors and their bounds stay ours (below): exact, opaque and bound to
// the organization.
const LedgerEntryConnection = builder.connectionObject(
  {
    type: LedgerEntryType,
    name: 'LedgerEntryConnection',
    edgesNullable: { list: false, items: false },
    nodeNullable: false,
  },
  { name: 'LedgerEntryEdge' },
);

// An entry is shown by its organization and its entry number (its place in that organization's
// journal), never by the global row id, which would count every organization's writes. A cursor
// carries the same two things, so it tells its holder nothing beyond its own organization's
// journal, and a forged one can only page that journal. It is bound to its organization: another
// organization's cursor is refused rather than read as a position in a different journal.
const ENTRY_ID_PREFIX = 'LedgerEntry:';
const CURSOR_PREFIX = 'ledger:';
const CURSOR = /^ledger:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}):([1-9][0-9]{0,15})$/;

type NumberedEntry = Pick<LedgerEntry, 'organizationId' | 'entryNumber'>;

function encodeEntryId(entry: NumberedEntry): string {
  return Buffer.from(`${ENTRY_ID_PREFIX}${entry.organizationId}:${entry.entryNumber}`).toString('base64url');
}

function encodeCursor(entry: NumberedEntry): string {
  return Buffer.from(`${CURSOR_PREFIX}${entry.organizationId}:${entry.entryNumber}`).toString('base64url');
}

/** The entry number a cursor points at, if it is a cursor of this organization's ledger. */
function decodeCursor(cursor: string, organizationId: string): number {
  const match = cursor.length <= 100 ? CURSOR.exec(Buffer.from(cursor, 'base64url').toString('utf8')) : null;
  const entryNumber = match ? Number(match[2]) : Number.NaN;
  if (!match || match[1] !== organizationId || !Number.isSafeInteger(entryNumber)) {
    throw new InvalidInputError("after is not a cursor from this organization's ledger.", 'after');
  }
  return entryNumber;
}

builder.queryField('ledger', (t) =>
  t.field({
    type: LedgerEntryConnection,
    description:
      "The organization's journal, newest first. An id that names no organization is bad input " +
      '(BAD_USER_INPUT on organizationId).',
    authScopes: allow({ roles: ['member', 'service', 'admin'], scopes: ['read'] }),
    // Only forward paging: the relay plugin's `last` and `before` are not offered.
    args: {
      organizationId: t.arg.id({ required: true }),
      first: t.arg.int({
        required: false,
        description: `Page size, 1 to ${LEDGER_PAGE_MAX} (default ${LEDGER_PAGE_DEFAULT}).`,
      }),
      after: t.arg.string({
        required: false,
        description: "An endCursor from an earlier page of this organization's ledger.",
      }),
    },
    resolve: (_root, args, ctx) =>
      asQueryInput(async () => {
        const organizationId = authorizeOrganization(ctx, args.organizationId);
        const first = requireIntInRange(args.first ?? LEDGER_PAGE_DEFAULT, 1, LEDGER_PAGE_MAX, 'first');
        const before = args.after ? decodeCursor(args.after, organizationId) : null;
        const page = await listLedgerEntries(ctx.db, organizationId, first, before);
        // An empty page is the only one that may belong to no organization: entries name theirs.
        if (page.entries.length === 0 && !(await findOrganization(ctx.db, organizationId))) throw noSuchOrganization();
        const edges = page.entries.map((entry) => ({ cursor: encodeCursor(entry), node: entry }));
        return {
          edges,
          pageInfo: {
            hasNextPage: page.hasNextPage,
            hasPreviousPage: before !== null,
            startCursor: edges[0]?.cursor ?? null,
            endCursor: edges.at(-1)?.cursor ?? null,
          },
        };
      }),
  }),
);
