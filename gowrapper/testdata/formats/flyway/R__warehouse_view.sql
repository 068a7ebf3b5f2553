CREATE OR REPLACE VIEW warehouse_totals AS
SELECT warehouse_id, sum(quantity) AS units FROM stock GROUP BY warehouse_id;
