-- Low-balance alerts: the thresholds an organization watches, and the outbox of fired alerts (one
-- row per crossing, written in the statement of the posting that crossed; never updated, and the
-- runtime role may only insert and read it).
CREATE TABLE "balance_alert_events" (
	"organization_id" uuid NOT NULL,
	"id" uuid NOT NULL,
	"alert_id" uuid NOT NULL,
	"threshold" integer NOT NULL,
	"available" bigint NOT NULL,
	"balance_version" integer,
	"occurred_at" timestamp with time zone NOT NULL,
	CONSTRAINT "balance_alert_events_organization_id_id_pk" PRIMARY KEY("organization_id","id"),
	CONSTRAINT "balance_alert_events_below_threshold" CHECK ("balance_alert_events"."available" < "balance_alert_events"."threshold")
);
--> statement-breakpoint
CREATE TABLE "balance_alerts" (
	"organization_id" uuid NOT NULL,
	"id" uuid NOT NULL,
	"threshold" integer NOT NULL,
	"armed" boolean NOT NULL,
	"idempotency_key" text NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"last_fired_at" timestamp with time zone,
	"removed_at" timestamp with time zone,
	CONSTRAINT "balance_alerts_organization_id_id_pk" PRIMARY KEY("organization_id","id"),
	CONSTRAINT "balance_alerts_threshold_range" CHECK ("balance_alerts"."threshold" between 1 and 2000000000)
);
--> statement-breakpoint
ALTER TABLE "balance_alert_events" ADD CONSTRAINT "balance_alert_events_organization_id_organizations_id_fk" FOREIGN KEY ("organization_id") REFERENCES "public"."organizations"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "balance_alert_events" ADD CONSTRAINT "balance_alert_events_alert_fk" FOREIGN KEY ("organization_id","alert_id") REFERENCES "public"."balance_alerts"("organization_id","id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "balance_alerts" ADD CONSTRAINT "balance_alerts_organization_id_organizations_id_fk" FOREIGN KEY ("organization_id") REFERENCES "public"."organizations"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "balance_alert_events_time_idx" ON "balance_alert_events" USING btree ("organization_id","occurred_at");--> statement-breakpoint
CREATE UNIQUE INDEX "balance_alerts_idempotency_idx" ON "balance_alerts" USING btree ("organization_id","idempotency_key");