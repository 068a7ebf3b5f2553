-- migrate:up
create table labels (id bigserial primary key, name text not null);
-- migrate:down
drop table labels;

-- migrate:up
create table label_aliases (alias text primary key, label text not null);
-- migrate:down
drop table label_aliases;
