---- tern: disable-tx ----
create unique index concurrently accounts_email_key on accounts (email);
---- create above / drop below ----
drop index accounts_email_key;
