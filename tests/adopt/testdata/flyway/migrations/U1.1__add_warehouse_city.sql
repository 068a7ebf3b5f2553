ALTER TABLE warehouses DROP COLUMN city;
