COMMENT ON TABLE warehouses IS 'owned by ${owner}, created by ${flyway:filename}';
