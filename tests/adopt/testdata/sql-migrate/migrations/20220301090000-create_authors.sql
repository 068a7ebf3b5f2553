-- +migrate Up
CREATE TABLE authors (
    id   serial PRIMARY KEY,
    name text NOT NULL
);

-- +migrate Down
DROP TABLE authors;
