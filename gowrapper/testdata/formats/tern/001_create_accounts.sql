-- Accounts of the billing service.
create table accounts (
    id         bigint generated always as identity primary key,
    email      text not null,
    created_at timestamptz not null default now()
);
---- create above / drop below ----
drop table accounts;
