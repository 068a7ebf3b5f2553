COMMENT ON TABLE warehouses IS 'owned by ${owner}';
