-- migrate:up
ALTER TABLE tasks ADD COLUMN due_date date;

-- migrate:down
ALTER TABLE tasks DROP COLUMN due_date;
