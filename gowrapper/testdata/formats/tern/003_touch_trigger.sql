set local lock_timeout = '3s';

create function touch_created_at() returns trigger language plpgsql as $$
begin
    new.created_at := coalesce(new.created_at, now());
    return new;
end
$$;

create trigger accounts_touch before insert on accounts
    for each row execute function touch_created_at();
---- create above / drop below ----
drop trigger accounts_touch on accounts;
drop function touch_created_at();
