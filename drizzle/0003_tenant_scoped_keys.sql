-- A payment reference is unique within its organization only (the per-organization key
-- credit_lots_source_key_idx already covers it), so organizations share no namespace of keys.
DROP INDEX "credit_lots_payment_reference_idx";--> statement-breakpoint
-- Each organization numbers its own journal entries 1, 2, 3, …; callers see these numbers, never
-- the global id. Existing entries are numbered in the order they were written.
ALTER TABLE "ledger_entries" ADD COLUMN "entry_number" bigint;--> statement-breakpoint
-- Numbering existing entries is the one rewrite the journal ever gets: the append-only trigger is
-- off for this statement only, inside the migration's transaction.
ALTER TABLE "ledger_entries" DISABLE TRIGGER "ledger_entries_append_only";--> statement-breakpoint
UPDATE "ledger_entries" e SET "entry_number" = n."entry_number"
  FROM (SELECT "id", row_number() OVER (PARTITION BY "organization_id" ORDER BY "id") AS "entry_number" FROM "ledger_entries") n
  WHERE e."id" = n."id";--> statement-breakpoint
ALTER TABLE "ledger_entries" ENABLE TRIGGER "ledger_entries_append_only";--> statement-breakpoint
ALTER TABLE "ledger_entries" ALTER COLUMN "entry_number" SET NOT NULL;--> statement-breakpoint
CREATE UNIQUE INDEX "ledger_entries_entry_number_idx" ON "ledger_entries" USING btree ("organization_id","entry_number");--> statement-breakpoint
DROP INDEX "ledger_entries_organization_idx";
