#!/usr/bin/env bash
# Installs (from Debian's packages), starts and stops the servers the integration tests use,
# on loopback. `source .ci/services.sh start` also exports the URLs the tests read:
#   MIGRATIONPILOT_TEST_POSTGRES_URL, MIGRATIONPILOT_TEST_MYSQL_URL, MIGRATIONPILOT_TEST_REDIS_URL
set -euo pipefail

services_install() {
    local missing=()
    command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
    command -v redis-server >/dev/null || missing+=(redis-server)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

wait_for() { # what, command...
    local what=$1; shift
    for _ in $(seq 1 60); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    echo "$what did not start" >&2
    return 1
}

services_start() {
    services_install

    local pg_version
    pg_version=$(ls /usr/lib/postgresql | sort -n | tail -1)
    pg_lsclusters -h | grep -q "^$pg_version main" || pg_createcluster "$pg_version" main >/dev/null
    pg_ctlcluster "$pg_version" main start 2>/dev/null || true
    wait_for postgresql su postgres -c "psql -qAtc 'SELECT 1'"
    su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null

    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    if ! mariadb-admin ping >/dev/null 2>&1; then
        (mysqld_safe --user=mysql --bind-address=127.0.0.1 >/dev/null 2>&1 &)
    fi
    wait_for mariadb mariadb-admin ping
    mariadb -e "CREATE USER IF NOT EXISTS 'mp_admin'@'127.0.0.1' IDENTIFIED BY 'mp_admin';
                GRANT ALL ON *.* TO 'mp_admin'@'127.0.0.1' WITH GRANT OPTION;"

    redis-cli -p 6379 ping >/dev/null 2>&1 || redis-server --port 6379 --bind 127.0.0.1 --daemonize yes >/dev/null
    wait_for redis redis-cli -p 6379 ping

    export MIGRATIONPILOT_TEST_POSTGRES_URL="postgres://postgres:postgres@127.0.0.1:5432/postgres"
    export MIGRATIONPILOT_TEST_MYSQL_URL="mysql://mp_admin:mp_admin@127.0.0.1:3306/mysql"
    export MIGRATIONPILOT_TEST_REDIS_URL="redis://127.0.0.1:6379"
}

services_stop() {
    redis-cli -p 6379 shutdown nosave >/dev/null 2>&1 || true
    mariadb-admin shutdown >/dev/null 2>&1 || true
    local pg_version
    pg_version=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
    [ -n "$pg_version" ] && pg_ctlcluster "$pg_version" main stop >/dev/null 2>&1 || true
}

case "${1:-}" in
    start) services_start ;;
    stop) services_stop ;;
    *) echo "usage: source .ci/services.sh start | .ci/services.sh stop" >&2; return 2 2>/dev/null || exit 2 ;;
esac
