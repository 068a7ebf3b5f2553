-- migrate:up
-- (kept for history: this migration's work moved to 20230901000000)

-- migrate:down
