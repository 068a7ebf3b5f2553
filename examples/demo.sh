#!/usr/bin/env bash
# make demo: pgmig's main job, against a throwaway PostgreSQL.
#
#   1. the pgmig CLI: install the engine, create migrations with `pgmig new`, push them, a failing
#      migration shown with its file, line and caret (nothing applied), fix it and push, status,
#      push again (nothing to do);
#   2. the same engine from psql, as any client, pg_cron job or admin GUI calls it:
#      migrate_apply(batch) on examples/demo-batch.json, twice, then migrate_status().
#
# Server binaries: whatever the test harness would use (PGMIG_PGBIN, PATH,
# /usr/lib/postgresql/*/bin), else a PostgreSQL build it fetches with npm (tests/pgtest/pgbin).
# The pgmig binary: bin/pgmig (make demo builds it first), or $PGMIG_DEMO_BINARY.
# Everything lives in a temp directory, removed at the end with the server.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

pgmig_bin=${PGMIG_DEMO_BINARY:-$repo/bin/pgmig}
[[ -x $pgmig_bin ]] || { echo "demo: $pgmig_bin not found: run make build (make demo does)" >&2; exit 2; }
echo "== finding PostgreSQL server binaries (tests/pgtest/pgbin)"
pgbin=$(go run ./tests/pgtest/pgbin) || { echo "demo: no PostgreSQL server binaries (see above)" >&2; exit 2; }
echo "$pgbin"

dir=$(mktemp -d /tmp/pgmig-demo.XXXXXX)
chmod 755 "$dir"
port=$(( 20000 + RANDOM % 20000 ))
as_pg=()
if [[ $(id -u) -eq 0 ]]; then
  # initdb refuses to run as root: run the server as the postgres account.
  chown postgres "$dir"
  as_pg=(runuser -u postgres --)
fi
cleanup() {
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

echo "== starting a throwaway PostgreSQL on port $port"
(cd / && "${as_pg[@]}" env -u PGDATA "$pgbin/initdb" --no-sync -A trust -U postgres -E UTF8 -D "$dir/data" >/dev/null)
(cd / && "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/data" -w -l "$dir/log" \
  -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c fsync=off" start >/dev/null)
# pgmig (and psql) read libpq's variables, as they would a DATABASE_URL or a pgmig.conf.
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=postgres PGSSLMODE=disable
unset DATABASE_URL PGMIG_CONFIG

work=$dir/project
mkdir "$work"
cd "$work"
pgmig() { "$pgmig_bin" "$@"; }
# run CMD...: show the command as one would type it, then run it.
run() {
  local a shown=()
  for a in "$@"; do
    if [[ $a =~ [^A-Za-z0-9_./:=@%+,-] ]]; then shown+=("'${a//\'/\'\\\'\'}'"); else shown+=("$a"); fi
  done
  echo
  echo "\$ ${shown[*]}"
  "$@"
}
# write FILE: the migration text from stdin, shown as a reader would type it.
write() {
  echo
  echo "\$ cat > $1 <<'SQL'"
  tee "$1"
  echo "SQL"
}

echo
echo "==== 1. the pgmig CLI"
run pgmig install
run pgmig new create_accounts --dir migrations
write migrations/001_create_accounts.sql <<'SQL'
create table accounts (
    id bigint generated always as identity primary key,
    email text not null unique
);
---- create above / drop below ----
drop table accounts;
SQL
run pgmig new add_display_name --dir migrations
write migrations/002_add_display_name.sql <<'SQL'
alter table accounts add column display_name text;
---- create above / drop below ----
alter table accounts drop column display_name;
SQL
run pgmig push --dir migrations

echo
echo "== a migration with a typo: shown with its file, line and caret; nothing of it is applied"
run pgmig new add_profiles --dir migrations
write migrations/003_add_profiles.sql <<'SQL'
create table profiles (
    account_id bigint primary key references accounts,
    bio text nott null
);
SQL
run pgmig push --dir migrations || echo "(exit $?: the migration failed and was rolled back)"

echo
echo "== fixed, pushed, and the history"
write migrations/003_add_profiles.sql <<'SQL'
create table profiles (
    account_id bigint primary key references accounts,
    bio text not null
);
SQL
run pgmig push --dir migrations
run pgmig status --dir migrations
echo
echo "== again: nothing to do (one lock-free query)"
run pgmig push --dir migrations

echo
echo "==== 2. the same engine from psql"
psql_bin=$(command -v psql || true)
if [[ -z $psql_bin && -x $pgbin/psql ]]; then psql_bin=$pgbin/psql; fi
if [[ -z $psql_bin ]]; then
  echo "psql is not installed (apt-get install postgresql-client): this part is left out"
  exit 0
fi
psql() { "$psql_bin" "$@"; }
run psql -X -q -c "create database psql_demo"
export PGDATABASE=psql_demo
cd "$repo"
run psql -X -q -v ON_ERROR_STOP=1 -f sql/build/pgmig.sql
batch="$(cat examples/demo-batch.json)"
# psql -c does not interpolate :'variables', so the statement goes on stdin.
echo
echo "\$ psql -v batch=\"\$(cat examples/demo-batch.json)\" <<< \"select * from migrate_apply(:'batch')\""
psql -X -v ON_ERROR_STOP=1 -v batch="$batch" <<< "select * from migrate_apply(:'batch');"
echo
echo "== again: everything is already applied"
psql -X -v ON_ERROR_STOP=1 -v batch="$batch" <<< "select * from migrate_apply(:'batch');"
run psql -X -c "select version, name, state, applied_by, duration from migrate_status()"
echo
echo "== demo done; the server is stopped and $dir removed"
