INSERT INTO warehouses (code, city) VALUES ('BER1', 'Berlin');
