create table sessions (
    token      text primary key,
    account_id bigint not null references accounts on delete cascade,
    expires_at timestamptz not null
);
create index on sessions (account_id);
---- create above / drop below ----
drop table sessions;
