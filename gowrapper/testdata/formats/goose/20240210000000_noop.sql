-- +goose Up
-- Nothing to do any more: the column this added was dropped before release.

-- +goose Down
