-- +goose Up
ALTER TABLE users ADD COLUMN team text;

-- +goose Down
ALTER TABLE users DROP COLUMN team;
