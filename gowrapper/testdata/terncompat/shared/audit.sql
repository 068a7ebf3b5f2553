comment on table {{.table}} is 'audited';
create index on {{.table}} (name);
