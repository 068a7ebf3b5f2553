-- Built without blocking writes: golang-migrate runs this outside a transaction.
SET statement_timeout = 0;
CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_customer_idx ON orders (customer_id);
