CREATE TYPE "public"."credit_account_type" AS ENUM('SUBSCRIPTION', 'PURCHASED', 'PROMOTIONAL', 'REFERRAL');--> statement-breakpoint
CREATE TYPE "public"."ledger_entry_kind" AS ENUM('GRANT', 'RESERVE', 'CAPTURE', 'REFUND', 'EXPIRE');--> statement-breakpoint
CREATE TYPE "public"."lot_source" AS ENUM('CYCLE', 'GRANT', 'PURCHASE', 'PLAN_CHANGE', 'DEMO');--> statement-breakpoint
CREATE TYPE "public"."model_tier" AS ENUM('DRAFT', 'STANDARD', 'PREMIUM');--> statement-breakpoint
CREATE TYPE "public"."output_type" AS ENUM('IMAGE', 'VIDEO', 'TEXT');--> statement-breakpoint
CREATE TYPE "public"."reservation_status" AS ENUM('PENDING', 'CAPTURED', 'REFUNDED');--> statement-breakpoint
CREATE TABLE "credit_lots" (
	"id" uuid PRIMARY KEY NOT NULL,
	"organization_id" uuid NOT NULL,
	"type" "credit_account_type" NOT NULL,
	"granted" integer NOT NULL,
	"available" integer NOT NULL,
	"reserved" integer DEFAULT 0 NOT NULL,
	"expires_at" timestamp with time zone,
	"created_at" timestamp with time zone NOT NULL,
	"source" "lot_source" NOT NULL,
	"source_key" text NOT NULL,
	"pack_id" text,
	"reason" text NOT NULL,
	CONSTRAINT "credit_lots_granted_positive" CHECK ("credit_lots"."granted" > 0),
	CONSTRAINT "credit_lots_available_nonnegative" CHECK ("credit_lots"."available" >= 0),
	CONSTRAINT "credit_lots_reserved_nonnegative" CHECK ("credit_lots"."reserved" >= 0),
	CONSTRAINT "credit_lots_within_granted" CHECK ("credit_lots"."available" + "credit_lots"."reserved" <= "credit_lots"."granted")
);
--> statement-breakpoint
CREATE TABLE "credit_packs" (
	"id" text PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"credits" integer NOT NULL,
	"price_cents" integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE "generation_models" (
	"id" text PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"tier" "model_tier" NOT NULL,
	"output_type" "output_type" NOT NULL,
	"unit_credits" integer NOT NULL,
	"resolutions" text[] NOT NULL,
	"max_duration_seconds" integer,
	"position" integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE "ledger_entries" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"organization_id" uuid NOT NULL,
	"lot_id" uuid NOT NULL,
	"reservation_id" uuid,
	"kind" "ledger_entry_kind" NOT NULL,
	"available_change" integer NOT NULL,
	"reserved_change" integer NOT NULL,
	"reason" text,
	"created_at" timestamp with time zone NOT NULL,
	CONSTRAINT "ledger_entries_nonzero" CHECK ("ledger_entries"."available_change" <> 0 or "ledger_entries"."reserved_change" <> 0)
);
--> statement-breakpoint
CREATE TABLE "organizations" (
	"id" uuid PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"plan_id" text NOT NULL,
	"next_plan_id" text,
	"billing_cycle_anchor" timestamp with time zone NOT NULL,
	"cycle_starts_at" timestamp with time zone NOT NULL,
	"cycle_ends_at" timestamp with time zone NOT NULL,
	"balance_version" integer DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "plans" (
	"id" text PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"monthly_credits" integer NOT NULL,
	"position" integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE "reservations" (
	"id" uuid PRIMARY KEY NOT NULL,
	"organization_id" uuid NOT NULL,
	"idempotency_key" text NOT NULL,
	"model_id" text NOT NULL,
	"resolution" text,
	"duration_seconds" integer,
	"count" integer NOT NULL,
	"amount" integer NOT NULL,
	"captured_amount" integer DEFAULT 0 NOT NULL,
	"refunded_amount" integer DEFAULT 0 NOT NULL,
	"status" "reservation_status" DEFAULT 'PENDING' NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"settled_at" timestamp with time zone,
	"refund_reason" text,
	CONSTRAINT "reservations_amount_positive" CHECK ("reservations"."amount" > 0),
	CONSTRAINT "reservations_settled_sum" CHECK ("reservations"."captured_amount" + "reservations"."refunded_amount" = case when "reservations"."status" = 'PENDING' then 0 else "reservations"."amount" end)
);
--> statement-breakpoint
ALTER TABLE "credit_lots" ADD CONSTRAINT "credit_lots_organization_id_organizations_id_fk" FOREIGN KEY ("organization_id") REFERENCES "public"."organizations"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "credit_lots" ADD CONSTRAINT "credit_lots_pack_id_credit_packs_id_fk" FOREIGN KEY ("pack_id") REFERENCES "public"."credit_packs"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "ledger_entries" ADD CONSTRAINT "ledger_entries_organization_id_organizations_id_fk" FOREIGN KEY ("organization_id") REFERENCES "public"."organizations"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "ledger_entries" ADD CONSTRAINT "ledger_entries_lot_id_credit_lots_id_fk" FOREIGN KEY ("lot_id") REFERENCES "public"."credit_lots"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "ledger_entries" ADD CONSTRAINT "ledger_entries_reservation_id_reservations_id_fk" FOREIGN KEY ("reservation_id") REFERENCES "public"."reservations"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "organizations" ADD CONSTRAINT "organizations_plan_id_plans_id_fk" FOREIGN KEY ("plan_id") REFERENCES "public"."plans"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "organizations" ADD CONSTRAINT "organizations_next_plan_id_plans_id_fk" FOREIGN KEY ("next_plan_id") REFERENCES "public"."plans"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "reservations" ADD CONSTRAINT "reservations_organization_id_organizations_id_fk" FOREIGN KEY ("organization_id") REFERENCES "public"."organizations"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "reservations" ADD CONSTRAINT "reservations_model_id_generation_models_id_fk" FOREIGN KEY ("model_id") REFERENCES "public"."generation_models"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "credit_lots_source_key_idx" ON "credit_lots" USING btree ("organization_id","source","source_key");--> statement-breakpoint
CREATE UNIQUE INDEX "credit_lots_payment_reference_idx" ON "credit_lots" USING btree ("source_key") WHERE "credit_lots"."source" = 'PURCHASE';--> statement-breakpoint
CREATE INDEX "credit_lots_organization_idx" ON "credit_lots" USING btree ("organization_id","type");--> statement-breakpoint
CREATE INDEX "credit_lots_expiring_idx" ON "credit_lots" USING btree ("expires_at") WHERE "credit_lots"."available" > 0 and "credit_lots"."expires_at" is not null;--> statement-breakpoint
CREATE INDEX "ledger_entries_organization_idx" ON "ledger_entries" USING btree ("organization_id","id");--> statement-breakpoint
CREATE INDEX "ledger_entries_lot_idx" ON "ledger_entries" USING btree ("lot_id");--> statement-breakpoint
CREATE INDEX "ledger_entries_reservation_idx" ON "ledger_entries" USING btree ("reservation_id") WHERE "ledger_entries"."reservation_id" is not null;--> statement-breakpoint
CREATE INDEX "organizations_cycle_ends_at_idx" ON "organizations" USING btree ("cycle_ends_at");--> statement-breakpoint
CREATE UNIQUE INDEX "reservations_idempotency_idx" ON "reservations" USING btree ("organization_id","idempotency_key");--> statement-breakpoint
CREATE INDEX "reservations_pending_expiry_idx" ON "reservations" USING btree ("expires_at") WHERE "reservations"."status" = 'PENDING';