# Throwaway database servers for the test suite. Source it, then call
# `maas_servers_start`; it exports MAAS_TEST_POSTGRES_URL and MAAS_TEST_MYSQL_URL and
# registers an EXIT trap that stops both servers by PID and removes their directories.
#
# - PostgreSQL 15 from the system's binaries (/usr/lib/postgresql/15/bin), run as the
#   unprivileged user `maas-pg` (initdb refuses root), on 127.0.0.1 and a free port.
# - MariaDB from apt's `mariadb-server` (installed if missing), `mariadb-install-db` into a
#   temporary datadir, `mariadbd` on a free loopback port.
#
# Nothing is skipped silently: if a server cannot start, the function prints why (with the
# server's log) and returns non-zero, and the test command fails.

MAAS_PG_BIN=${MAAS_PG_BIN:-/usr/lib/postgresql/15/bin}
MAAS_SERVERS_DIR=""
MAAS_PG_DIR=""
MAAS_MARIADB_PID=""

maas_free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
        return
    fi
    local port
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    echo "no free port found" >&2
    return 1
}

maas_servers_stop() {
    if [ -n "$MAAS_PG_DIR" ] && [ -f "$MAAS_PG_DIR/data/postmaster.pid" ]; then
        runuser -u maas-pg -- "$MAAS_PG_BIN/pg_ctl" -D "$MAAS_PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if [ -n "$MAAS_MARIADB_PID" ] && kill -0 "$MAAS_MARIADB_PID" 2>/dev/null; then
        kill "$MAAS_MARIADB_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$MAAS_MARIADB_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$MAAS_MARIADB_PID" 2>/dev/null || true
    fi
    [ -n "$MAAS_SERVERS_DIR" ] && rm -rf "$MAAS_SERVERS_DIR"
    MAAS_SERVERS_DIR=""
}

maas_start_postgres() {
    if [ ! -x "$MAAS_PG_BIN/initdb" ]; then
        echo "PostgreSQL 15 server binaries not found in $MAAS_PG_BIN (apt-get install postgresql-15)" >&2
        return 1
    fi
    id maas-pg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin maas-pg
    MAAS_PG_DIR="$MAAS_SERVERS_DIR/pg"
    mkdir -p "$MAAS_PG_DIR"
    chown maas-pg "$MAAS_PG_DIR"
    local port
    port=$(maas_free_port)
    if ! runuser -u maas-pg -- "$MAAS_PG_BIN/initdb" -D "$MAAS_PG_DIR/data" -U maas --auth=trust >"$MAAS_PG_DIR/initdb.log" 2>&1; then
        echo "initdb failed:" >&2
        cat "$MAAS_PG_DIR/initdb.log" >&2
        return 1
    fi
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$MAAS_PG_DIR'"
        echo "max_connections = 200"
        echo "fsync = on"
    } >>"$MAAS_PG_DIR/data/postgresql.conf"
    if ! runuser -u maas-pg -- "$MAAS_PG_BIN/pg_ctl" -D "$MAAS_PG_DIR/data" -l "$MAAS_PG_DIR/server.log" -w -t 60 start >/dev/null; then
        echo "PostgreSQL did not start:" >&2
        cat "$MAAS_PG_DIR/server.log" >&2
        return 1
    fi
    runuser -u maas-pg -- "$MAAS_PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U maas maas_test
    export MAAS_TEST_POSTGRES_URL="postgres://maas@127.0.0.1:$port/maas_test"
    export MAAS_TEST_POSTGRES_PORT="$port"
    echo "PostgreSQL 15 on 127.0.0.1:$port ($MAAS_TEST_POSTGRES_URL)"
}

maas_start_mariadb() {
    if ! command -v mariadbd >/dev/null 2>&1; then
        echo "installing mariadb-server from apt (its attempt to start the system service is refused and harmless)"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server >"$MAAS_SERVERS_DIR/apt.log" 2>&1; then
            DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$MAAS_SERVERS_DIR/apt.log" 2>&1 || true
            if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server >>"$MAAS_SERVERS_DIR/apt.log" 2>&1; then
                echo "could not install mariadb-server:" >&2
                tail -20 "$MAAS_SERVERS_DIR/apt.log" >&2
                return 1
            fi
        fi
    fi
    local dir="$MAAS_SERVERS_DIR/mariadb" port
    mkdir -p "$dir"
    port=$(maas_free_port)
    if ! mariadb-install-db --no-defaults --datadir="$dir/data" --user=root --auth-root-authentication-method=normal >"$dir/install.log" 2>&1; then
        echo "mariadb-install-db failed:" >&2
        cat "$dir/install.log" >&2
        return 1
    fi
    mariadbd --no-defaults --datadir="$dir/data" --user=root --port="$port" --bind-address=127.0.0.1 \
        --socket="$dir/sock" --pid-file="$dir/pid" --max-connections=300 >"$dir/server.log" 2>&1 &
    MAAS_MARIADB_PID=$!
    for _ in $(seq 1 300); do
        if mariadb-admin --no-defaults --socket="$dir/sock" -uroot ping >/dev/null 2>&1; then
            break
        fi
        if ! kill -0 "$MAAS_MARIADB_PID" 2>/dev/null; then
            echo "MariaDB exited during start-up:" >&2
            cat "$dir/server.log" >&2
            return 1
        fi
        sleep 0.1
    done
    if ! mariadb --no-defaults --socket="$dir/sock" -uroot -e "CREATE DATABASE maas_test" 2>"$dir/create.log"; then
        echo "MariaDB did not come up on port $port:" >&2
        cat "$dir/server.log" "$dir/create.log" >&2
        return 1
    fi
    export MAAS_TEST_MYSQL_URL="mysql://root@127.0.0.1:$port/maas_test"
    export MAAS_TEST_MYSQL_PORT="$port"
    echo "MariaDB $(mariadbd --version | awk '{print $3}') on 127.0.0.1:$port ($MAAS_TEST_MYSQL_URL)"
}

maas_servers_start() {
    MAAS_SERVERS_DIR=$(mktemp -d /tmp/maas-servers.XXXXXX)
    chmod 755 "$MAAS_SERVERS_DIR"
    trap maas_servers_stop EXIT
    maas_start_postgres || return 1
    maas_start_mariadb || return 1
}

# OpenIPMI's ipmi_sim (the BMC simulator maas-ipmi's tests start), ipmitool and FreeIPMI's
# ipmipower (the peers the tests and benchmarks compare against), from apt if missing.
# maas_apt_install TAG PACKAGE...: installs the packages from apt (nothing when none are
# given), refreshing the package lists once if the first try fails; on failure prints the
# end of /tmp/maas-apt-TAG.log and returns 1.
maas_apt_install() {
    local tag=$1
    shift
    [ $# -gt 0 ] || return 0
    echo "installing $* from apt"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >"/tmp/maas-apt-$tag.log" 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >"/tmp/maas-apt-$tag.log" 2>&1; }; }; then
        echo "cannot install $*:" >&2
        tail -20 "/tmp/maas-apt-$tag.log" >&2
        return 1
    fi
}

maas_ipmi_tools_install() {
    local missing=()
    command -v ipmi_sim >/dev/null 2>&1 || missing+=(openipmi)
    command -v ipmitool >/dev/null 2>&1 || missing+=(ipmitool)
    command -v ipmipower >/dev/null 2>&1 || missing+=(freeipmi-tools)
    maas_apt_install ipmi "${missing[@]}" || return 1
    command -v ipmi_sim >/dev/null && command -v ipmitool >/dev/null && command -v ipmipower >/dev/null
}

# maas_browser_install: what the console's browser tests (maas-grpc/tests/console.rs) and
# the REST tests need: Debian's chromium, curl, and Node.js with npm (the test installs
# playwright-core from npm itself). Installed from apt when missing.
maas_browser_install() {
    local missing=()
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    maas_apt_install browser "${missing[@]}" || return 1
}
