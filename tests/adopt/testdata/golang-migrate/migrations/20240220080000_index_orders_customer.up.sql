-- Outside a transaction, as golang-migrate runs a lone statement.
CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_customer_idx ON orders (customer_id);
