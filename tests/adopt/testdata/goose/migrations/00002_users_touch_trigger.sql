-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION users_touch() RETURNS trigger AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd

CREATE TRIGGER users_touch BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION users_touch();

-- +goose Down
DROP TRIGGER users_touch ON users;
DROP FUNCTION users_touch();
