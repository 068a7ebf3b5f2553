BEGIN;
CREATE TYPE order_status AS ENUM ('open', 'paid', 'shipped');
ALTER TABLE orders ADD COLUMN status order_status NOT NULL DEFAULT 'open';
COMMIT;
