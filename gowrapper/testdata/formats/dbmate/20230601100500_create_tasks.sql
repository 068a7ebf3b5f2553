-- migrate:up
set local lock_timeout = '4s';
create table tasks (
  id bigserial primary key,
  project_id bigint not null references projects (id),
  title text not null,
  done boolean not null default false
);

create function tasks_open(p bigint) returns bigint language sql stable as $$
  select count(*) from tasks where project_id = p and not done;
$$;

-- migrate:down
drop function tasks_open(bigint);
drop table tasks;
