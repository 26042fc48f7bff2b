-- Keys a database sharded by organization can enforce: organization_id leads every primary key,
-- unique key and foreign key of the tenant tables, so each check stays on one organization's shard.
-- Every step keeps the rows as they are; the new foreign keys validate that each entry's lot and
-- reservation belong to the entry's organization (the audit's rule), and refuse a journal where not.
--
-- The external id is unique across organizations: its claims move to a table keyed by the external
-- id itself, filled from the organizations that have one.
CREATE TABLE "organization_external_ids" (
	"external_id" text PRIMARY KEY NOT NULL,
	"organization_id" uuid NOT NULL
);
--> statement-breakpoint
INSERT INTO "organization_external_ids" ("external_id", "organization_id")
  SELECT "external_id", "id" FROM "organizations" WHERE "external_id" IS NOT NULL;--> statement-breakpoint
DROP INDEX "organizations_external_id_idx";--> statement-breakpoint
-- The foreign keys by lot or reservation id alone go first: they depend on the keys replaced below.
ALTER TABLE "ledger_entries" DROP CONSTRAINT "ledger_entries_lot_id_credit_lots_id_fk";--> statement-breakpoint
ALTER TABLE "ledger_entries" DROP CONSTRAINT "ledger_entries_reservation_id_reservations_id_fk";--> statement-breakpoint
ALTER TABLE "credit_lots" DROP CONSTRAINT "credit_lots_pkey";--> statement-breakpoint
ALTER TABLE "credit_lots" ADD CONSTRAINT "credit_lots_organization_id_id_pk" PRIMARY KEY("organization_id","id");--> statement-breakpoint
ALTER TABLE "reservations" DROP CONSTRAINT "reservations_pkey";--> statement-breakpoint
ALTER TABLE "reservations" ADD CONSTRAINT "reservations_organization_id_id_pk" PRIMARY KEY("organization_id","id");--> statement-breakpoint
-- The journal is keyed by its per-organization numbering, which the unique index already enforced;
-- the global id stays as a plain column, internal and unordered on a sharded database.
ALTER TABLE "ledger_entries" DROP CONSTRAINT "ledger_entries_pkey";--> statement-breakpoint
ALTER TABLE "ledger_entries" ADD CONSTRAINT "ledger_entries_organization_id_entry_number_pk" PRIMARY KEY("organization_id","entry_number");--> statement-breakpoint
DROP INDEX "ledger_entries_entry_number_idx";--> statement-breakpoint
ALTER TABLE "ledger_entries" ADD CONSTRAINT "ledger_entries_lot_fk" FOREIGN KEY ("organization_id","lot_id") REFERENCES "public"."credit_lots"("organization_id","id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "ledger_entries" ADD CONSTRAINT "ledger_entries_reservation_fk" FOREIGN KEY ("organization_id","reservation_id") REFERENCES "public"."reservations"("organization_id","id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
DROP INDEX "ledger_entries_lot_idx";--> statement-breakpoint
CREATE INDEX "ledger_entries_lot_idx" ON "ledger_entries" USING btree ("organization_id","lot_id");--> statement-breakpoint
DROP INDEX "ledger_entries_reservation_idx";--> statement-breakpoint
CREATE INDEX "ledger_entries_reservation_idx" ON "ledger_entries" USING btree ("organization_id","reservation_id") WHERE "ledger_entries"."reservation_id" is not null;
