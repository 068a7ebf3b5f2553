-- Written on Windows: CRLF line endings, which Flyway's checksum ignores.
CREATE UNIQUE INDEX CONCURRENTLY warehouses_code_key
    ON warehouses (code);
