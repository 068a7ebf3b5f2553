-- migrate:up
insert into projects (name) values ('inbox');

-- migrate:down
delete from projects where name = 'inbox';
