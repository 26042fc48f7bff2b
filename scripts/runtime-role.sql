-- Least privilege for the service's runtime role on PostgreSQL. Migrations run as the owner of
-- the schema (`npm run db:migrate`); the serving processes connect as this role with
-- DATABASE_MIGRATE=0. The journal gets SELECT and INSERT only: even a compromised process cannot
-- rewrite or empty it (the append-only triggers are a second wall for the owner).
--   psql "$OWNER_DATABASE_URL" -v app_role=credits_app -f scripts/runtime-role.sql
GRANT USAGE ON SCHEMA public TO :"app_role";
GRANT USAGE ON SCHEMA drizzle TO :"app_role";
-- Start-up checks that every migration is applied.
GRANT SELECT ON drizzle.__drizzle_migrations TO :"app_role";
GRANT SELECT ON plans, credit_packs, generation_models TO :"app_role";
GRANT SELECT, INSERT, UPDATE ON organizations, credit_lots, reservations, withheld_credits TO :"app_role";
GRANT SELECT, INSERT ON ledger_entries TO :"app_role";
GRANT USAGE ON SEQUENCE ledger_entries_id_seq TO :"app_role";
-- External-id claims are written once, with the organization they name, and never changed.
GRANT SELECT, INSERT ON organization_external_ids TO :"app_role";
-- Idempotency keys of captures, refunds and extensions record an answer once and never change.
GRANT SELECT, INSERT ON reservation_operation_keys TO :"app_role";
-- The plan history is appended to with every plan change and never rewritten, like the journal.
-- Lots need UPDATE (their credits move); the trigger credit_lots_immutable keeps the rest of a lot.
GRANT SELECT, INSERT ON plan_changes TO :"app_role";
-- Low-balance alerts change state (armed, fired, removed); their events are an outbox that is
-- appended to and read, never rewritten.
GRANT SELECT, INSERT, UPDATE ON balance_alerts TO :"app_role";
GRANT SELECT, INSERT ON balance_alert_events TO :"app_role";
-- Webhooks are set, rotated and removed (never deleted); deliveries change state with each attempt.
GRANT SELECT, INSERT, UPDATE ON organization_webhooks, webhook_deliveries TO :"app_role";
