-- Each file wraps itself in a transaction: golang-migrate runs a file as written.
BEGIN;
CREATE TABLE customers (
    id    bigserial PRIMARY KEY,
    name  text NOT NULL,
    email text UNIQUE
);
COMMENT ON TABLE customers IS 'one row per paying customer';
COMMIT;
