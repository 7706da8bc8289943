# shellcheck shell=bash
# Helpers shared by .ci/run and the other scripts here. Source it; it
# defines functions only (and a few variables), and runs nothing.

# Messages. `step` lines are the ones a reader of a CI log looks for.
step() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
warn() { printf '!!  %s\n' "$*" >&2; }
die() {
    warn "$*"
    exit 1
}

# quiet WHAT CMD...: runs CMD with its output kept in a log; prints nothing
# when it succeeds, and the whole log and the exit status when it fails.
quiet() {
    local what=$1
    shift
    local log rc=0
    log=$(mktemp "${TMPDIR:-/tmp}/coffer-quiet.XXXXXX")
    "$@" >"$log" 2>&1 || rc=$?
    if ((rc != 0)); then
        warn "FAILED: $what (exit $rc): $*"
        warn "---- its output ----"
        cat "$log" >&2
        warn "---- end of output ----"
    fi
    rm -f "$log"
    return "$rc"
}

# as_root CMD...: runs CMD as root (directly, or with sudo when not root).
as_root() {
    if ((EUID == 0)); then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        warn "needs root, and there is no sudo: $*"
        return 1
    fi
}

# apt_install PKG...: installs the Debian packages that are not installed
# yet; runs `apt-get update` at most once per run.
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    note "apt-get install ${missing[*]}"
    if [[ -z ${APT_UPDATED:-} ]]; then
        quiet "apt-get update" as_root env DEBIAN_FRONTEND=noninteractive apt-get -q update || return 1
        APT_UPDATED=1
    fi
    quiet "apt-get install ${missing[*]}" as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get -q -y --no-install-recommends -o Dpkg::Options::=--force-confold install "${missing[@]}"
}

# port_open PORT [HOST]: whether something accepts TCP connections there.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/${2:-127.0.0.1}/$1" 2>/dev/null
}

# wait_for_port NAME PORT [SECONDS] [LOG]: waits until the port answers, at
# most SECONDS (default 60); on timeout shows the end of LOG and fails.
wait_for_port() {
    local name=$1 port=$2 limit=${3:-60} log=${4:-}
    local deadline=$((SECONDS + limit))
    until port_open "$port"; do
        if ((SECONDS >= deadline)); then
            warn "$name does not answer on 127.0.0.1:$port after ${limit}s"
            if [[ -n $log && -r $log ]]; then
                warn "---- last lines of $log ----"
                tail -n 40 "$log" >&2
            fi
            return 1
        fi
        sleep 0.5
    done
}
