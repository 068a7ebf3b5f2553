
-- accounts, with a template variable for the table prefix
create table {{.prefix}}accounts (
    id bigint generated always as identity primary key,
    name text not null
);
{{ template "shared/audit.sql" dict "table" (print .prefix "accounts") }}

---- create above / drop below ----

drop table {{.prefix}}accounts;
