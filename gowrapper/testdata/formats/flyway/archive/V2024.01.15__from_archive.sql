ALTER TABLE stock ADD COLUMN updated_at timestamptz;
