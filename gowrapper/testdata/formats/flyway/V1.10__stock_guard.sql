CREATE FUNCTION stock_not_negative() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.quantity < 0 THEN
        RAISE EXCEPTION 'stock of % in warehouse % would be negative', NEW.sku, NEW.warehouse_id;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER stock_not_negative BEFORE INSERT OR UPDATE ON stock
    FOR EACH ROW EXECUTE FUNCTION stock_not_negative();
