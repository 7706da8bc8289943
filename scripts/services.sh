# shellcheck shell=bash
# The local services the tests talk to, on 127.0.0.1:
#   PostgreSQL 5432 (trust auth; role root, databases test and root),
#   Redis 6379 (keeps nothing on disk), NATS with JetStream 4222.
#
# Source it (after scripts/lib.sh) and call `ensure_services`: for each
# service it installs the Debian package if missing, starts the server if
# its port does not answer, and waits (bounded) until it does. Idempotent:
# a service that already answers is left alone.
#
#   source scripts/lib.sh; source scripts/services.sh; ensure_services

SERVICE_WAIT_SECS=${SERVICE_WAIT_SECS:-60}

ensure_services() {
    ensure_postgres
    ensure_redis
    ensure_nats
}

ensure_postgres() {
    local port=5432
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
        apt_install postgresql || return 1
    fi
    if ! port_open "$port"; then
        # A cluster: Debian's package makes `main`; make one if none is left.
        if [[ -z $(pg_lsclusters -h 2>/dev/null) ]]; then
            local version
            version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
            [[ -n $version ]] || die "PostgreSQL is installed but /usr/lib/postgresql has no version"
            note "creating the PostgreSQL $version cluster main"
            quiet "pg_createcluster" as_root pg_createcluster -p "$port" "$version" main || return 1
        fi
        local version cluster _port status _rest
        while read -r version cluster _port status _rest; do
            if [[ $status == down ]]; then
                note "starting PostgreSQL $version/$cluster"
                quiet "start PostgreSQL $version/$cluster" \
                    as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start || return 1
            fi
        done < <(pg_lsclusters -h)
    fi
    local logs=(/var/log/postgresql/postgresql-*-main.log)
    wait_for_port PostgreSQL "$port" "$SERVICE_WAIT_SECS" "${logs[-1]}" || return 1
    postgres_trust_and_databases "$port"
    note "PostgreSQL answers on 127.0.0.1:$port"
}

# The tests connect over TCP without a password, as `postgres` or `root`,
# to the database `test`: a fresh Debian cluster asks for passwords, so
# trust local connections there, once.
postgres_trust_and_databases() {
    local port=$1
    if ! psql -h 127.0.0.1 -p "$port" -U postgres -w -tAc 'select 1' >/dev/null 2>&1; then
        local hba
        hba=$(as_root runuser -u postgres -- psql -p "$port" -tAc 'show hba_file') ||
            die "cannot ask PostgreSQL for its pg_hba.conf (as the postgres user, by socket)"
        if ! as_root grep -q '^# coffer: trust local connections' "$hba"; then
            note "PostgreSQL: trusting local connections ($hba)"
            as_root cp "$hba" "$hba.before-coffer"
            {
                printf '# coffer: trust local connections (scripts/services.sh); test machines only\n'
                printf 'local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n'
                as_root cat "$hba.before-coffer"
            } | as_root tee "$hba" >/dev/null
            quiet "reload PostgreSQL" as_root runuser -u postgres -- psql -p "$port" -tAc 'select pg_reload_conf()' || return 1
        fi
        local tries=0
        until psql -h 127.0.0.1 -p "$port" -U postgres -w -tAc 'select 1' >/dev/null 2>&1; do
            ((++tries < 20)) || die "PostgreSQL still refuses postgres@127.0.0.1 without a password"
            sleep 0.5
        done
    fi
    local sql=(psql -h 127.0.0.1 -p "$port" -U postgres -w -v ON_ERROR_STOP=1 -tAq)
    if [[ -z $("${sql[@]}" -c "select 1 from pg_roles where rolname = 'root'") ]]; then
        quiet "create role root" "${sql[@]}" -c 'create role root superuser login' || return 1
    fi
    local db
    for db in test root; do
        if [[ -z $("${sql[@]}" -c "select 1 from pg_database where datname = '$db'") ]]; then
            quiet "create database $db" "${sql[@]}" -c "create database \"$db\"" || return 1
        fi
    done
}

ensure_redis() {
    local port=6379 log=/var/log/redis/ci.log
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server || return 1
    if ! port_open "$port"; then
        note "starting Redis"
        as_root mkdir -p /var/lib/redis /var/log/redis
        quiet "start Redis" as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$port" \
            --save "" --appendonly no --dir /var/lib/redis --logfile "$log" || return 1
    fi
    wait_for_port Redis "$port" "$SERVICE_WAIT_SECS" "$log" || return 1
    note "Redis answers on 127.0.0.1:$port"
}

ensure_nats() {
    local port=4222 log=/var/log/nats-server.log
    [[ -x /usr/sbin/nats-server ]] || apt_install nats-server || return 1
    if ! port_open "$port"; then
        note "starting NATS (JetStream)"
        as_root mkdir -p /var/lib/nats-server
        # --oknodo: a nats-server already running (still starting) is fine.
        quiet "start NATS" as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
            -a 127.0.0.1 -p "$port" -js -sd /var/lib/nats-server -l "$log" || return 1
    fi
    wait_for_port NATS "$port" "$SERVICE_WAIT_SECS" "$log" || return 1
    note "NATS answers on 127.0.0.1:$port"
}
