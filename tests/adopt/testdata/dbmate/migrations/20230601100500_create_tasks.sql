-- migrate:up
CREATE TABLE tasks (
    id         bigserial PRIMARY KEY,
    project_id bigint NOT NULL REFERENCES projects (id),
    title      text NOT NULL
);

-- migrate:down
DROP TABLE tasks;
