-- +goose ENVSUB ON
-- +goose Up
COMMENT ON TABLE users IS 'owned by ${TEAM_NAME}, contact ${TEAM_CONTACT:-nobody}';
-- +goose ENVSUB OFF
COMMENT ON COLUMN users.team IS 'costs ${not substituted}';

-- +goose Down
COMMENT ON TABLE users IS NULL;
