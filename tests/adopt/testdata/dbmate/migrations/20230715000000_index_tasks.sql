-- migrate:up transaction:false
CREATE INDEX CONCURRENTLY tasks_project_idx ON tasks (project_id);

-- migrate:down transaction:false
DROP INDEX CONCURRENTLY tasks_project_idx;
