-- +migrate Up
INSERT INTO authors (name) VALUES ('Ursula');

-- +migrate Down
DELETE FROM authors WHERE name = 'Ursula';
