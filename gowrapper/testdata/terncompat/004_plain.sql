create view {{.prefix}}account_names as select name from {{.prefix}}accounts;
---- create above / drop below ----
drop view {{.prefix}}account_names;
