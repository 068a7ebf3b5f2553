CREATE TABLE stock (
    warehouse_id bigint NOT NULL REFERENCES warehouses (id),
    sku          text   NOT NULL,
    quantity     int    NOT NULL DEFAULT 0,
    PRIMARY KEY (warehouse_id, sku)
);
