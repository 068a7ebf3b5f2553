-- +goose Up
ALTER TABLE users ADD COLUMN last_login timestamptz;

-- +goose Down
ALTER TABLE users DROP COLUMN last_login;
