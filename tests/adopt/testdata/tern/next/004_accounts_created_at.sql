alter table accounts add column created_at timestamptz not null default now();
---- create above / drop below ----
alter table accounts drop column created_at;
