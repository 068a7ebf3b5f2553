CREATE TABLE stock (
    warehouse_id bigint NOT NULL REFERENCES warehouses (id),
    sku          text NOT NULL,
    quantity     integer NOT NULL DEFAULT 0 CHECK (quantity >= 0),
    PRIMARY KEY (warehouse_id, sku)
);
