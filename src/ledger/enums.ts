import { accountType, entryKind, type lotSource, modelTier, outputType, reservationStatus } from '../db/schema.ts';

// Every closed list of the domain is read from the database enum that stores it, so a value added
// to, removed from or moved in a `pgEnum` changes every copy at once: the GraphQL enums, the
// command line's choices and the order balances are shown in. The GraphQL layer takes its lists
// from here rather than from the database schema, which it does not see.

/** Where credits came from, in consumption order: PostgreSQL sorts enum values by declaration. */
export const ACCOUNT_TYPES = accountType.enumValues;
export type AccountType = (typeof ACCOUNT_TYPES)[number];

export const ENTRY_KINDS = entryKind.enumValues;
export type EntryKind = (typeof ENTRY_KINDS)[number];

export const RESERVATION_STATUSES = reservationStatus.enumValues;
export type ReservationStatus = (typeof RESERVATION_STATUSES)[number];

export const OUTPUT_TYPES = outputType.enumValues;
export type OutputType = (typeof OUTPUT_TYPES)[number];

export const MODEL_TIERS = modelTier.enumValues;
export type ModelTier = (typeof MODEL_TIERS)[number];

export type LotSource = (typeof lotSource.enumValues)[number];
