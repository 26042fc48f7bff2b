-- The audit's independent facts. The plan history records every change of an organization's plan
-- in the transaction that makes it; a lot's identity (type, source, plan, cycle, credits granted)
-- never changes after its grant; purchased credits never expire; and each GRANT entry names the
-- account type its lot was granted as. So the audit judges lots and organizations against records
-- that only ever grow, not against the very rows it checks.
CREATE TYPE "public"."plan_change_kind" AS ENUM('INITIAL', 'CREATED', 'SCHEDULED', 'CANCELLED', 'UPGRADED', 'APPLIED');--> statement-breakpoint
CREATE TABLE "plan_changes" (
	"organization_id" uuid NOT NULL,
	"change_number" integer NOT NULL,
	"kind" "plan_change_kind" NOT NULL,
	"plan_id" text NOT NULL,
	"next_plan_id" text,
	"cycle_starts_at" timestamp with time zone NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	CONSTRAINT "plan_changes_organization_id_change_number_pk" PRIMARY KEY("organization_id","change_number"),
	CONSTRAINT "plan_changes_number_positive" CHECK ("plan_changes"."change_number" > 0)
);
--> statement-breakpoint
ALTER TABLE "plan_changes" ADD CONSTRAINT "plan_changes_organization_id_organizations_id_fk" FOREIGN KEY ("organization_id") REFERENCES "public"."organizations"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "plan_changes" ADD CONSTRAINT "plan_changes_plan_id_plans_id_fk" FOREIGN KEY ("plan_id") REFERENCES "public"."plans"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "plan_changes" ADD CONSTRAINT "plan_changes_next_plan_id_plans_id_fk" FOREIGN KEY ("next_plan_id") REFERENCES "public"."plans"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
-- The history begins with the state each organization is in now: what happened before this
-- migration is taken as given.
INSERT INTO "plan_changes" ("organization_id", "change_number", "kind", "plan_id", "next_plan_id", "cycle_starts_at", "created_at")
  SELECT "id", 1, 'INITIAL', "plan_id", "next_plan_id", "cycle_starts_at", now() FROM "organizations";--> statement-breakpoint
CREATE FUNCTION plan_changes_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'plan_changes is append-only';
END;
$$;
--> statement-breakpoint
CREATE TRIGGER plan_changes_append_only
  BEFORE UPDATE OR DELETE ON "plan_changes"
  FOR EACH ROW EXECUTE FUNCTION plan_changes_append_only();--> statement-breakpoint
CREATE TRIGGER plan_changes_no_truncate
  BEFORE TRUNCATE ON "plan_changes"
  FOR EACH STATEMENT EXECUTE FUNCTION plan_changes_append_only();--> statement-breakpoint
-- A lot's available and reserved credits move, and its expiry may move to the moment it is closed;
-- nothing else about it ever changes. The trigger fires only for updates that name one of these
-- columns, so the ledger's own updates (available, reserved, expires_at) never run it.
CREATE FUNCTION credit_lots_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.id, NEW.organization_id, NEW.type, NEW.granted, NEW.created_at, NEW.source, NEW.source_key,
      NEW.pack_id, NEW.plan_id, NEW.cycle_starts_at, NEW.reason)
    IS DISTINCT FROM (OLD.id, OLD.organization_id, OLD.type, OLD.granted, OLD.created_at, OLD.source, OLD.source_key,
      OLD.pack_id, OLD.plan_id, OLD.cycle_starts_at, OLD.reason) THEN
    RAISE EXCEPTION 'a credit lot''s type, source, plan, cycle and granted credits never change';
  END IF;
  RETURN NEW;
END;
$$;
--> statement-breakpoint
CREATE TRIGGER credit_lots_immutable
  BEFORE UPDATE OF "id", "organization_id", "type", "granted", "created_at", "source", "source_key", "pack_id", "plan_id", "cycle_starts_at", "reason"
  ON "credit_lots"
  FOR EACH ROW EXECUTE FUNCTION credit_lots_immutable();--> statement-breakpoint
ALTER TABLE "credit_lots" ADD CONSTRAINT "credit_lots_purchased_never_expire" CHECK ("credit_lots"."type" <> 'PURCHASED' or "credit_lots"."expires_at" is null);--> statement-breakpoint
-- Entries written before this migration are given their lot's type as it stands (what happened
-- before is taken as given), so the rule holds for every entry, and the constraint is valid: a
-- database sharded later (Citus) copies the journal into its shards under it. The journal refuses
-- updates; this one backfill is the migration's, made with the guard off and on again.
ALTER TABLE "ledger_entries" ADD COLUMN "lot_type" "credit_account_type";--> statement-breakpoint
ALTER TABLE "ledger_entries" DISABLE TRIGGER "ledger_entries_append_only";--> statement-breakpoint
UPDATE "ledger_entries" AS e SET "lot_type" = l."type"
  FROM "credit_lots" AS l
  WHERE e."kind" = 'GRANT' AND l."organization_id" = e."organization_id" AND l."id" = e."lot_id";--> statement-breakpoint
ALTER TABLE "ledger_entries" ENABLE TRIGGER "ledger_entries_append_only";--> statement-breakpoint
ALTER TABLE "ledger_entries" ADD CONSTRAINT "ledger_entries_grant_names_type" CHECK (("ledger_entries"."kind" = 'GRANT') = ("ledger_entries"."lot_type" is not null));
