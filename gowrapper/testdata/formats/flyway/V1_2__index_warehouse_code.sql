-- Flyway runs this outside a transaction: it detects CREATE INDEX CONCURRENTLY.
SET lock_timeout = '2s';
CREATE UNIQUE INDEX CONCURRENTLY warehouses_code_key ON warehouses (code);
