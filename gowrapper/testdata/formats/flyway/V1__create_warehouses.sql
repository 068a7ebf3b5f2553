CREATE TABLE warehouses (
    id   bigserial PRIMARY KEY,
    code text NOT NULL
);
