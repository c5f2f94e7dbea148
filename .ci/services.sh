#!/usr/bin/env bash
# Installs (from Debian's packages; aiosmtpd, schemathesis and check-jsonschema from PyPI into a venv), starts and stops the servers
# the integration tests use, on loopback. `source .ci/services.sh start` also exports what the
# tests read:
#   MIGRATIONPILOT_TEST_POSTGRES_URL, MIGRATIONPILOT_TEST_MYSQL_URL, MIGRATIONPILOT_TEST_REDIS_URL
#   MIGRATIONPILOT_TEST_PROMETHEUS, MIGRATIONPILOT_TEST_PROMTOOL    (absolute paths of the binaries)
#   MIGRATIONPILOT_TEST_ALERTMANAGER                                 (absolute path of the binary)
#   MIGRATIONPILOT_TEST_CHROMIUM    (absolute path; as root it needs --headless --no-sandbox)
#   MIGRATIONPILOT_TEST_ZSH, MIGRATIONPILOT_TEST_FISH  (the shells whose completion scripts are parsed)
#   MIGRATIONPILOT_TEST_AIOSMTPD    (a python that has aiosmtpd: `$it -m aiosmtpd -n -l 127.0.0.1:PORT`)
#   MIGRATIONPILOT_TEST_SCHEMATHESIS (the schemathesis program, pinned: run against serve's OpenAPI document)
#   MIGRATIONPILOT_TEST_CHECK_JSONSCHEMA (the check-jsonschema program, pinned: checks pipeline files
#                                    against `migrationpilot schema`)
#   MIGRATIONPILOT_CI_RUN           (marks this run's processes, for `stop`)
# Prometheus, Alertmanager, Chromium, aiosmtpd, schemathesis and check-jsonschema are only installed, never started here: the tests
# run their own processes. The packages' own daemons are kept stopped and disabled, and `stop` also
# ends whatever of these programs that the run started is still running.
set -euo pipefail

MIGRATIONPILOT_CI_VENV=/opt/migrationpilot-ci/venv
MIGRATIONPILOT_CI_AIOSMTPD_VERSION=1.4.6
MIGRATIONPILOT_CI_SCHEMATHESIS_VERSION=4.32.5
MIGRATIONPILOT_CI_CHECK_JSONSCHEMA_VERSION=0.39.0
# systemd units / init scripts that Debian's prometheus packages may start on their own.
MIGRATIONPILOT_CI_DAEMONS=(prometheus prometheus-alertmanager prometheus-node-exporter)

aiosmtpd_ready() {
    "$MIGRATIONPILOT_CI_VENV/bin/python" -c "import importlib.metadata as m, sys
sys.exit(m.version('aiosmtpd') != '$MIGRATIONPILOT_CI_AIOSMTPD_VERSION')" >/dev/null 2>&1
}

schemathesis_ready() {
    "$MIGRATIONPILOT_CI_VENV/bin/python" -c "import importlib.metadata as m, sys
sys.exit(m.version('schemathesis') != '$MIGRATIONPILOT_CI_SCHEMATHESIS_VERSION')" >/dev/null 2>&1 &&
        [ -x "$MIGRATIONPILOT_CI_VENV/bin/schemathesis" ]
}

check_jsonschema_ready() {
    "$MIGRATIONPILOT_CI_VENV/bin/python" -c "import importlib.metadata as m, sys
sys.exit(m.version('check-jsonschema') != '$MIGRATIONPILOT_CI_CHECK_JSONSCHEMA_VERSION')" >/dev/null 2>&1 &&
        [ -x "$MIGRATIONPILOT_CI_VENV/bin/check-jsonschema" ]
}

services_install() {
    local missing=()
    command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
    command -v redis-server >/dev/null || missing+=(redis-server)
    { command -v prometheus && command -v promtool; } >/dev/null || missing+=(prometheus)
    command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
    command -v chromium >/dev/null || missing+=(chromium)
    command -v zsh >/dev/null || missing+=(zsh)
    command -v fish >/dev/null || missing+=(fish)
    if { ! aiosmtpd_ready || ! schemathesis_ready || ! check_jsonschema_ready; } && ! /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        missing+=(python3-venv)
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]}"
        apt-get update -qq
        # Keep the packages' postinst from starting their daemons (a container's image may
        # already have such a policy; leave that one alone).
        local policy=/usr/sbin/policy-rc.d own_policy="" rc=0
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
        [ -z "$own_policy" ] || rm -f "$policy"
        [ "$rc" -eq 0 ] || return "$rc"
    fi
    if ! aiosmtpd_ready; then
        echo "installing aiosmtpd $MIGRATIONPILOT_CI_AIOSMTPD_VERSION into $MIGRATIONPILOT_CI_VENV"
        /usr/bin/python3 -m venv --clear "$MIGRATIONPILOT_CI_VENV"
        "$MIGRATIONPILOT_CI_VENV/bin/python" -m pip install -q --disable-pip-version-check \
            "aiosmtpd==$MIGRATIONPILOT_CI_AIOSMTPD_VERSION"
        aiosmtpd_ready
    fi
    if ! schemathesis_ready; then
        echo "installing schemathesis $MIGRATIONPILOT_CI_SCHEMATHESIS_VERSION into $MIGRATIONPILOT_CI_VENV"
        "$MIGRATIONPILOT_CI_VENV/bin/python" -m pip install -q --disable-pip-version-check \
            "schemathesis==$MIGRATIONPILOT_CI_SCHEMATHESIS_VERSION"
        schemathesis_ready
    fi
    if ! check_jsonschema_ready; then
        echo "installing check-jsonschema $MIGRATIONPILOT_CI_CHECK_JSONSCHEMA_VERSION into $MIGRATIONPILOT_CI_VENV"
        "$MIGRATIONPILOT_CI_VENV/bin/python" -m pip install -q --disable-pip-version-check \
            "check-jsonschema==$MIGRATIONPILOT_CI_CHECK_JSONSCHEMA_VERSION"
        check_jsonschema_ready
    fi
}

# Stops and disables the daemons of Debian's prometheus packages, whatever the init system.
package_daemons_off() {
    local d
    for d in "${MIGRATIONPILOT_CI_DAEMONS[@]}"; do
        if [ -e "/lib/systemd/system/$d.service" ]; then
            if [ -d /run/systemd/system ]; then
                systemctl disable --now --quiet "$d.service" >/dev/null 2>&1 || true
            else
                systemctl disable --quiet "$d.service" >/dev/null 2>&1 || true
            fi
        fi
        if [ -x "/etc/init.d/$d" ]; then
            "/etc/init.d/$d" stop >/dev/null 2>&1 || true
        fi
    done
    # Debian runs them as the `prometheus` user, which nothing else uses.
    if id -u prometheus >/dev/null 2>&1; then
        pkill -u prometheus >/dev/null 2>&1 || true
    fi
}

# Pids of the processes of this run (their environment has its MIGRATIONPILOT_CI_RUN; with none
# set, that of any run) that run one of the binaries above, Chromium's, or the venv's python. The
# environment keeps stop from ending the same programs that someone else runs on this machine.
stray_pids() {
    local exes=() name path p exe arg0 run=(-e '^MIGRATIONPILOT_CI_RUN=')
    [ -z "${MIGRATIONPILOT_CI_RUN:-}" ] || run=(-Fx -e "MIGRATIONPILOT_CI_RUN=$MIGRATIONPILOT_CI_RUN")
    for name in prometheus promtool prometheus-alertmanager amtool prometheus-node-exporter; do
        if path=$(command -v "$name"); then exes+=("$(readlink -f "$path")"); fi
    done
    for p in /proc/[0-9]*; do
        exe=$(readlink "$p/exe" 2>/dev/null) || continue
        arg0=""
        IFS= read -r -d "" arg0 2>/dev/null <"$p/cmdline" || true
        case "$exe" in
            /usr/lib/chromium/*) ;;
            *) case "$arg0" in
                   "$MIGRATIONPILOT_CI_VENV"/*) ;;
                   *) [[ " ${exes[*]-} " == *" $exe "* ]] || continue ;;
               esac ;;
        esac
        grep -qz "${run[@]}" "$p/environ" 2>/dev/null && echo "${p#/proc/}"
    done
    return 0
}

kill_strays() {
    local pids=()
    mapfile -t pids < <(stray_pids)
    [ ${#pids[@]} -gt 0 ] || return 0
    kill "${pids[@]}" >/dev/null 2>&1 || true
    for _ in $(seq 1 20); do
        mapfile -t pids < <(stray_pids)
        [ ${#pids[@]} -gt 0 ] || return 0
        sleep 0.25
    done
    kill -9 "${pids[@]}" >/dev/null 2>&1 || true
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
    export MIGRATIONPILOT_CI_RUN="${MIGRATIONPILOT_CI_RUN:-$$-$(date +%s%N)}"
    services_install
    package_daemons_off

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
    MIGRATIONPILOT_TEST_PROMETHEUS=$(command -v prometheus)
    MIGRATIONPILOT_TEST_PROMTOOL=$(command -v promtool)
    MIGRATIONPILOT_TEST_ALERTMANAGER=$(command -v prometheus-alertmanager)
    MIGRATIONPILOT_TEST_CHROMIUM=$(command -v chromium)
    MIGRATIONPILOT_TEST_ZSH=$(command -v zsh)
    MIGRATIONPILOT_TEST_FISH=$(command -v fish)
    export MIGRATIONPILOT_TEST_PROMETHEUS MIGRATIONPILOT_TEST_PROMTOOL MIGRATIONPILOT_TEST_ALERTMANAGER \
        MIGRATIONPILOT_TEST_CHROMIUM MIGRATIONPILOT_TEST_ZSH MIGRATIONPILOT_TEST_FISH
    export MIGRATIONPILOT_TEST_AIOSMTPD="$MIGRATIONPILOT_CI_VENV/bin/python"
    export MIGRATIONPILOT_TEST_SCHEMATHESIS="$MIGRATIONPILOT_CI_VENV/bin/schemathesis"
    export MIGRATIONPILOT_TEST_CHECK_JSONSCHEMA="$MIGRATIONPILOT_CI_VENV/bin/check-jsonschema"
}

services_stop() {
    kill_strays
    package_daemons_off
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
