#!/usr/bin/env bash
# make demo-admin: the admin-tooling paths (docs/admin-tooling.md) on a throwaway PostgreSQL:
# a one-file release script from `pgmig bundle` run with psql (again: nothing to do; four
# sessions at once: each migration once; a failing migration: named, rolled back), then a
# staged release from `pgmig stage` applied with CALL migrate_run_staged, and — when pg_cron is
# installed — the same applied by a pg_cron job scheduled into the application database.
# Needs Go, the PostgreSQL server binaries and psql (Debian: apt-get install postgresql
# postgresql-<major>-cron).
set -euo pipefail
cd "$(dirname "$0")/.."

pgbin="${PGMIG_PGBIN:-}"
if [[ -z "$pgbin" ]]; then
  if command -v initdb >/dev/null; then pgbin="$(dirname "$(readlink -f "$(command -v initdb)")")"
  else pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"; fi
fi
[[ -x "$pgbin/initdb" ]] || { echo "demo-admin: no PostgreSQL server binaries found; apt-get install postgresql, or set PGMIG_PGBIN" >&2; exit 2; }
psql="$(command -v psql || echo "$pgbin/psql")"

dir="$(mktemp -d /tmp/pgmig-demo-admin.XXXXXX)"
port=$(( 20000 + RANDOM % 20000 ))
as_pg=()
if [[ $(id -u) -eq 0 ]]; then
  # initdb refuses to run as root: run the server as the postgres account.
  chown postgres "$dir"; chmod 755 "$dir"
  as_pg=(runuser -u postgres --)
fi
cleanup() { "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

echo "== building pgmig"
CGO_ENABLED=0 go build -o "$dir/pgmig" ./cmd/pgmig
pgmig="$dir/pgmig"

cron=
if [[ -f "$("$pgbin/pg_config" --pkglibdir 2>/dev/null)/pg_cron.so" ]]; then cron=1; fi
opts="-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c fsync=off"
if [[ -n "$cron" ]]; then
  opts+=" -c shared_preload_libraries=pg_cron -c cron.database_name=postgres -c cron.host=127.0.0.1"
fi
echo "== starting a throwaway PostgreSQL on port $port${cron:+ (with pg_cron)}"
"${as_pg[@]}" "$pgbin/initdb" --no-sync -A trust -U postgres -D "$dir/data" >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/data" -w -l "$dir/log" -o "$opts" start >/dev/null
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=postgres
run() { echo; echo "\$ $*"; "$@"; }
q() { "$psql" -X -v ON_ERROR_STOP=1 "$@"; }

mig="$dir/migrations"
mkdir "$mig"
cat > "$mig/001_accounts.sql" <<'SQL'
create table accounts (id bigint primary key, name text not null);
---- create above / drop below ----
drop table accounts;
SQL
cat > "$mig/002_add_email.sql" <<'SQL'
alter table accounts add column email text;
comment on column accounts.email is 'may hold anything: $$, $pgmig_batch$, quotes '' and Grüße';
SQL
for db in app1 app2 app3; do q -q -c "create database $db"; done

echo
echo "== 1. a one-file release script"
run "$pgmig" bundle --dir "$mig" -o "$dir/release.sql" --with-engine
echo; echo "\$ head -22 release.sql"; head -22 "$dir/release.sql"
run "$psql" -X -v ON_ERROR_STOP=1 -d app1 -f "$dir/release.sql"
echo; echo "== run again: nothing to do"
run "$psql" -X -v ON_ERROR_STOP=1 -d app1 -f "$dir/release.sql"

echo; echo "== four sessions at once on an empty database: the engine installed once, each migration applied once"
for i in 1 2 3 4; do "$psql" -X -q -v ON_ERROR_STOP=1 -d app2 -f "$dir/release.sql" 2>"$dir/s$i.log" & done
wait
grep -h "installed the pgmig engine\|applying version" "$dir"/s?.log | sed 's/^psql:[^ ]* //'
run "$psql" -X -d app2 -c "select version, name, backend_pid from pgmig.history"

echo; echo "== a failing migration: named, its transaction rolled back, psql exits 3"
printf 'create table audit_log (id bigint);\ninsert into audit_log valuez (1);\n' > "$mig/003_audit_log.sql"
"$pgmig" bundle --dir "$mig" -o "$dir/release.sql" --quiet
echo; echo "\$ psql -v ON_ERROR_STOP=1 -d app1 -f release.sql"
"$psql" -X -v ON_ERROR_STOP=1 -d app1 -f "$dir/release.sql" || echo "(psql exit code $?)"
run "$psql" -X -d app1 -c "select version, name from pgmig.history" -c "select to_regclass('audit_log') as audit_log"
printf 'create table audit_log (id bigint);\ninsert into audit_log values (1);\n' > "$mig/003_audit_log.sql"
"$pgmig" bundle --dir "$mig" -o "$dir/release.sql" --quiet
echo; echo "== fixed and bundled again"
run "$psql" -X -v ON_ERROR_STOP=1 -d app1 -f "$dir/release.sql"

echo; echo "== 2. a staged release: CI stages it, an operator (or pg_cron) runs it"
export DATABASE_URL="postgres://postgres@127.0.0.1:$port/app3?sslmode=disable"
run "$pgmig" install
run "$pgmig" stage --dir "$mig" --label v1.0.0 --target 2
run "$psql" -X -d app3 -c "CALL migrate_run_staged('v1.0.0')"
run "$psql" -X -d app3 -c "CALL migrate_run_staged('v1.0.0')"
run "$pgmig" stage --list

if [[ -z "$cron" ]]; then
  echo; echo "== pg_cron is not installed here (apt-get install postgresql-<major>-cron): skipping the scheduled run"
else
  echo; echo "== 3. the next release, applied by a pg_cron job scheduled into app3 from the postgres database"
  run "$pgmig" stage --dir "$mig" --label v1.1.0
  q -q -c "create extension pg_cron"
  run "$psql" -X -c "select cron.schedule_in_database('pgmig-v1.1.0', '* * * * *', \$\$CALL migrate_run_staged('v1.1.0')\$\$, 'app3')"
  echo "(pg_cron starts jobs at the top of the minute: waiting up to a minute)"
  for _ in $(seq 1 75); do
    n=$(q -At -c "select count(*) from cron.job_run_details where status in ('succeeded', 'failed')")
    [[ "$n" -gt 0 ]] && break
    sleep 1
  done
  run "$psql" -X -c "select jobid, status, return_message, end_time - start_time as took from cron.job_run_details"
  run "$psql" -X -c "select cron.unschedule('pgmig-v1.1.0')"
  run "$pgmig" stage --list
fi
echo
echo "== demo done; the server is stopped and $dir removed"
