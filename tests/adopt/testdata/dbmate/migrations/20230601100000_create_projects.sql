-- migrate:up
CREATE TABLE projects (
    id   bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE
);

-- migrate:down
DROP TABLE projects;
