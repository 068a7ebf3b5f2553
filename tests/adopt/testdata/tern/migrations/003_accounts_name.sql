alter table accounts add column name text;
---- create above / drop below ----
alter table accounts drop column name;
