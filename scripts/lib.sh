# Shell functions shared by scripts/test.sh and bench/compare.sh. Source it; the
# caller defines die() (print a message and exit 1).

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# Installs Debian package $1 with its service kept stopped and disabled: our scripts
# start what they need themselves (a PostgreSQL in a temporary directory, a coturn
# on loopback), never a package's own server. invoke-rc.d and deb-systemd-invoke ask
# /usr/sbin/policy-rc.d, and 101 means "not allowed"; only a policy file this
# function created is removed again. $2 names the service to disable afterwards
# (empty: the package has none).
apt_install_keeping_services_stopped() {
    local package=$1 service=$2
    command -v apt-get >/dev/null 2>&1 || die "apt-get is not available; install $package by hand"
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# written by ferroturn scripts/lib.sh while installing %s\nexit 101\n' "$package" |
            as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        made_policy=1
    fi
    local rc=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || rc=$?
    if [ "$rc" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends "$package" || rc=$?
    fi
    if [ "$made_policy" = 1 ]; then
        as_root rm -f "$policy"
    fi
    [ "$rc" -eq 0 ] || die "installing $package failed (apt-get exit $rc)"
    # We installed it, so its service is ours to keep off: not enabled at boot, and
    # not running (it cannot have been running before the package existed).
    if [ -n "$service" ] && command -v systemctl >/dev/null 2>&1; then
        as_root systemctl disable "$service" >/dev/null 2>&1 || true
        if [ -d /run/systemd/system ] && systemctl is-active --quiet "$service" 2>/dev/null; then
            as_root systemctl stop "$service"
        fi
    fi
}
