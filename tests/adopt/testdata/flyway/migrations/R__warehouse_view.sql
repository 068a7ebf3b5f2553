CREATE OR REPLACE VIEW warehouse_stock AS
SELECT w.code, s.sku, s.quantity FROM warehouses w JOIN stock s ON s.warehouse_id = w.id;
