CREATE TABLE "withheld_credits" (
	"organization_id" uuid NOT NULL,
	"source" "lot_source" NOT NULL,
	"source_key" text NOT NULL,
	"amount" integer NOT NULL,
	"reason" text NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	CONSTRAINT "withheld_credits_organization_id_source_source_key_pk" PRIMARY KEY("organization_id","source","source_key"),
	CONSTRAINT "withheld_credits_amount_positive" CHECK ("withheld_credits"."amount" > 0)
);
--> statement-breakpoint
ALTER TABLE "credit_lots" ADD COLUMN "plan_id" text;--> statement-breakpoint
ALTER TABLE "credit_lots" ADD COLUMN "cycle_starts_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "organizations" ADD COLUMN "external_id" text;--> statement-breakpoint
ALTER TABLE "withheld_credits" ADD CONSTRAINT "withheld_credits_organization_id_organizations_id_fk" FOREIGN KEY ("organization_id") REFERENCES "public"."organizations"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "credit_lots" ADD CONSTRAINT "credit_lots_plan_id_plans_id_fk" FOREIGN KEY ("plan_id") REFERENCES "public"."plans"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "organizations_external_id_idx" ON "organizations" USING btree ("external_id");--> statement-breakpoint
-- Allowance lots written before this migration: their cycle is in the source key (an ISO
-- timestamp, optionally followed by ':<version>'), their plan in the reason the grant wrote.
UPDATE "credit_lots" SET "cycle_starts_at" = left("source_key", 24)::timestamptz
  WHERE "source" IN ('CYCLE', 'PLAN_CHANGE');--> statement-breakpoint
UPDATE "credit_lots" l SET "plan_id" = p."id" FROM "plans" p
  WHERE l."source" IN ('CYCLE', 'PLAN_CHANGE')
    AND l."reason" IN (p."name" || ' plan allowance', p."name" || ' plan allowance (plan change)');--> statement-breakpoint
-- Emptying the journal is a way of rewriting it; refuse it like an update or a delete.
CREATE TRIGGER ledger_entries_no_truncate
  BEFORE TRUNCATE ON "ledger_entries"
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_append_only();
