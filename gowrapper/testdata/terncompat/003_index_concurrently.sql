---- tern: disable-tx ----
create index concurrently accounts_name_idx2 on {{.prefix}}accounts (name);

---- create above / drop below ----
drop index accounts_name_idx2;
