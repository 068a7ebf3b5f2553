ALTER TABLE warehouses ADD COLUMN capacity integer;
