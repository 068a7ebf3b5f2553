-- migrate:up transaction:false
create index concurrently tasks_project_idx on tasks (project_id);

-- migrate:down transaction:false
drop index concurrently tasks_project_idx;
