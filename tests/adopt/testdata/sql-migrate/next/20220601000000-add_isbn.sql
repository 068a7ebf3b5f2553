-- +migrate Up
ALTER TABLE books ADD COLUMN isbn text;

-- +migrate Down
ALTER TABLE books DROP COLUMN isbn;
