-- migrate:up
create table projects (
  id bigserial primary key,
  name text not null unique
);

-- migrate:down
drop table projects;
