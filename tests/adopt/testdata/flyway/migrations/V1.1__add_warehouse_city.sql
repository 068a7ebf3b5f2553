ALTER TABLE warehouses ADD COLUMN city text;
