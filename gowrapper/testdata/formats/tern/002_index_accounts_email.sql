---- tern: disable-tx ----
create index concurrently accounts_email_idx on accounts (email);
---- create above / drop below ----
drop index concurrently accounts_email_idx;
