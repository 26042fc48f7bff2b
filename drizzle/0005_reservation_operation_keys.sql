CREATE TABLE "reservation_operation_keys" (
	"organization_id" uuid NOT NULL,
	"idempotency_key" text NOT NULL,
	"reservation_id" uuid NOT NULL,
	"operation" text NOT NULL,
	"request" text NOT NULL,
	"answer" jsonb NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	CONSTRAINT "reservation_operation_keys_organization_id_idempotency_key_pk" PRIMARY KEY("organization_id","idempotency_key"),
	CONSTRAINT "reservation_operation_keys_operation" CHECK ("reservation_operation_keys"."operation" in ('CAPTURE', 'REFUND', 'EXTEND'))
);
--> statement-breakpoint
ALTER TABLE "reservation_operation_keys" ADD CONSTRAINT "reservation_operation_keys_organization_id_organizations_id_fk" FOREIGN KEY ("organization_id") REFERENCES "public"."organizations"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "reservation_operation_keys" ADD CONSTRAINT "reservation_operation_keys_reservation_fk" FOREIGN KEY ("organization_id","reservation_id") REFERENCES "public"."reservations"("organization_id","id") ON DELETE no action ON UPDATE no action;