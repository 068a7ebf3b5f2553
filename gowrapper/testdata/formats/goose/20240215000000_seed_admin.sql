-- +goose Up
INSERT INTO users (username, email) VALUES ('admin', 'admin@example.com');

-- +goose Down
DELETE FROM users WHERE username = 'admin';
