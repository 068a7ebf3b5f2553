-- +migrate Up
-- Superseded by 20220501000000; kept so every database records it.

-- +migrate Down
