-- Seeded catalogs: plans with monthly allowances, credit packs, and generation models.
INSERT INTO "plans" ("id", "name", "monthly_credits", "position") VALUES
  ('free', 'Free', 100, 1),
  ('starter', 'Starter', 1000, 2),
  ('pro', 'Pro', 5000, 3),
  ('studio', 'Studio', 20000, 4);
--> statement-breakpoint
INSERT INTO "credit_packs" ("id", "name", "credits", "price_cents") VALUES
  ('pack-500', '500 credits', 500, 500),
  ('pack-2000', '2,000 credits', 2000, 1800),
  ('pack-10000', '10,000 credits', 10000, 8000);
--> statement-breakpoint
INSERT INTO "generation_models" ("id", "name", "tier", "output_type", "unit_credits", "resolutions", "max_duration_seconds", "position") VALUES
  ('image-draft', 'Sketch (draft image)', 'DRAFT', 'IMAGE', 1, '{SD_480P,HD_720P,FHD_1080P}', NULL, 1),
  ('image-standard', 'Canvas (standard image)', 'STANDARD', 'IMAGE', 4, '{SD_480P,HD_720P,FHD_1080P,UHD_4K}', NULL, 2),
  ('image-premium', 'Canvas Pro (premium image)', 'PREMIUM', 'IMAGE', 10, '{HD_720P,FHD_1080P,UHD_4K}', NULL, 3),
  ('video-draft', 'Motion (draft video)', 'DRAFT', 'VIDEO', 2, '{SD_480P,HD_720P}', 10, 4),
  ('video-standard', 'Motion (standard video)', 'STANDARD', 'VIDEO', 5, '{SD_480P,HD_720P,FHD_1080P}', 30, 5),
  ('video-premium', 'Motion Pro (premium video)', 'PREMIUM', 'VIDEO', 12, '{HD_720P,FHD_1080P,UHD_4K}', 60, 6),
  ('text-draft', 'Write (draft text)', 'DRAFT', 'TEXT', 1, '{}', NULL, 7),
  ('text-standard', 'Write (standard text)', 'STANDARD', 'TEXT', 2, '{}', NULL, 8),
  ('text-premium', 'Write Pro (premium text)', 'PREMIUM', 'TEXT', 5, '{}', NULL, 9);
--> statement-breakpoint
-- The journal is append-only: what happened is never rewritten.
CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'ledger_entries is append-only';
END;
$$;
--> statement-breakpoint
CREATE TRIGGER ledger_entries_append_only
  BEFORE UPDATE OR DELETE ON "ledger_entries"
  FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();
