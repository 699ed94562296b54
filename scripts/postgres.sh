# Sourced by scripts/test and scripts/bench: a PostgreSQL server of their own, in a temp dir,
# on 127.0.0.1 and a socket in that dir, never a system-wide instance. PostgreSQL refuses to
# run as root, so as root it runs as the postgres user (Debian's package creates it).

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

# Starts the server; sets PG_URL (postgresql://keyturn@127.0.0.1:PORT, no database) and
# PG_VERSION, and stops it when the calling script exits.
start_postgres() {
    local bin dir port
    bin=$(pg_bin)
    dir=$(mktemp -d /tmp/keyturn-pg.XXXXXX)
    chmod 755 "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    PG_STOP="as_pg $bin/pg_ctl -D $dir/db -m immediate stop >/dev/null 2>&1; rm -rf $dir"
    trap 'eval "$PG_STOP"' EXIT
    as_pg "$bin/initdb" -D "$dir/db" -A trust -U keyturn >/dev/null
    as_pg "$bin/pg_ctl" -D "$dir/db" -l "$dir/log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=400" start >/dev/null
    PG_URL="postgresql://keyturn@127.0.0.1:$port"
    PG_VERSION=$("$bin/postgres" --version | awk '{print $3}')
}
