insert into {{.prefix}}accounts (name)
select 'user ' || g from generate_series(1, {{ .seed_rows | default 3 }}) g;
-- sprig: {{ "upper" | upper }}
