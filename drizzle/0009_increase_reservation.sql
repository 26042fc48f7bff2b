-- Growing a pending reservation: its idempotency keys are recorded like those of captures,
-- refunds and extensions, as operation INCREASE.
ALTER TABLE "reservation_operation_keys" DROP CONSTRAINT "reservation_operation_keys_operation";--> statement-breakpoint
ALTER TABLE "reservation_operation_keys" ADD CONSTRAINT "reservation_operation_keys_operation" CHECK ("reservation_operation_keys"."operation" in ('CAPTURE', 'REFUND', 'EXTEND', 'INCREASE'));