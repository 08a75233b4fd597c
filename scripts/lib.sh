# Shared shell helpers for scripts/ and bench/: install what is missing, pick free ports.
# Sourced, not run.

# The persistent build folder outside the clone (fast repeated CI runs; a fresh machine builds it).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tributary-target}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

_apt_updated=""
# need_apt COMMAND PACKAGE: installs the Debian PACKAGE when COMMAND is not on PATH.
need_apt() {
    local cmd="$1" pkg="$2"
    command -v "$cmd" >/dev/null 2>&1 && return 0
    [ -x "/usr/sbin/$cmd" ] && return 0
    apt_install "$pkg" "$cmd"
}

# need_apt_pkg PKG: installs a Debian package (a library, say) unless dpkg has it.
need_apt_pkg() {
    dpkg -s "$1" >/dev/null 2>&1 || apt_install "$1" "$1"
}

# need_pip MODULE PKG: installs PyPI package PKG unless python3 can import MODULE.
need_pip() {
    local module="$1" pkg="$2"
    python3 -c "import $module" >/dev/null 2>&1 && return 0
    log "installing $pkg from PyPI (for $module)"
    python3 -m pip install -q --disable-pip-version-check "$pkg" >/dev/null 2>&1 \
        || python3 -m pip install -q --disable-pip-version-check --break-system-packages "$pkg" \
        || die "pip install $pkg failed"
    python3 -c "import $module" || die "$pkg installed but python3 cannot import $module"
}

# apt_install PKG FOR: apt-get install, with one apt-get update per run.
apt_install() {
    local pkg="$1" cmd="$2"
    command -v apt-get >/dev/null 2>&1 || die "$cmd is missing and apt-get is not available to install $pkg"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if [ -z "$_apt_updated" ]; then
        log "apt-get update"
        $sudo apt-get update -qq >/dev/null || die "apt-get update failed"
        _apt_updated=1
    fi
    log "installing $pkg (for $cmd)"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg" >/dev/null || die "apt-get install $pkg failed"
}

# need_cargo_component NAME: checks a rustup component (rustfmt, clippy) is there.
need_cargo_component() {
    local sub="$1" component="$2"
    if ! cargo "$sub" --version >/dev/null 2>&1; then
        log "installing rustup component $component"
        rustup component add "$component" || die "cargo $sub is missing: rustup component add $component"
    fi
}

# free_port: prints a free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_http URL [SECONDS]: waits until URL answers 2xx.
wait_http() {
    local url="$1" limit="${2:-30}" i=0
    while ! curl -fsS -o /dev/null "$url" 2>/dev/null; do
        i=$((i + 1))
        [ "$i" -le $((limit * 10)) ] || die "$url did not answer within ${limit}s"
        sleep 0.1
    done
}

# use_workdir: makes $WORK (a temp folder) and $PIDS (background processes); both are cleaned
# up when the script exits. Add a process with: PIDS+=($!)
use_workdir() {
    WORK="$(mktemp -d)"
    PIDS=()
    trap '_cleanup_workdir' EXIT
}
_cleanup_workdir() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    # Some brokers (tansu) ignore SIGTERM for a while: give them a second, then SIGKILL.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        local alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
