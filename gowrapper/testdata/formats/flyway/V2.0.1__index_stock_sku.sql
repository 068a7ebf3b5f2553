CREATE INDEX stock_sku_idx ON stock (sku);
