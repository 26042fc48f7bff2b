// Every quantity the ledger accepts has a bound; inputs outside it are refused before any write.
export const GRANT_CREDITS_MAX = 1_000_000_000;
export const BALANCE_CREDITS_MAX = 2_000_000_000;
export const GENERATION_COUNT_MAX = 100;
export const TTL_SECONDS_DEFAULT = 900;
export const TTL_SECONDS_MAX = 86_400;
// A reservation is settled within a day of its creation, however often it is extended.
export const RESERVATION_LIFETIME_SECONDS_MAX = 86_400;
export const KEY_LENGTH_MAX = 255;
export const TEXT_LENGTH_MAX = 255;
export const LEDGER_PAGE_DEFAULT = 20;
export const LEDGER_PAGE_MAX = 100;
// Catalog ids (plans, packs, models) are short; a longer one cannot exist and is not looked up.
export const CATALOG_ID_LENGTH_MAX = 100;
// The longest prefix of caller input an error message repeats.
export const ECHO_LENGTH_MAX = 40;
// Instants the ledger accepts (billing anchors, expiries): from the Unix epoch to the year 3000.
export const INSTANT_MIN = new Date('1970-01-01T00:00:00Z');
export const INSTANT_MAX = new Date('3000-01-01T00:00:00Z');
