alter table users add column created_at timestamptz not null default now();
---- create above / drop below ----
alter table users drop column created_at;
