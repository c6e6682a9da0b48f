# Shell functions bench/compare.sh and bench/offload.sh share: coturn 4.17.1
# built from its source release, the processes a benchmark starts (and stops,
# by PID, only those), the load and how one measurement is recorded. Source it
# after scripts/lib.sh, with die() defined and these set: repo (the checkout),
# cache (BENCH_CACHE). Before the functions below run, also: out (where logs
# go), results (the JSON lines file rows go to), duration (of a measurement)
# and ferroturn (the binary whose `bench` is the load).

coturn_new_version=4.17.1
coturn_new_sha256=5db79a4814fd25e87c0da1bd01072d348e2e86c6299534b780750398a2b49867
coturn_tarball=${COTURN_TARBALL:-$repo/../shared/anchors/coturn-$coturn_new_version.tar.gz}

# coturn 4.17.1 from its source release (../shared/anchors/README.md): cmake into
# $cache/coturn-4.17.1, once. Built in a scratch directory, installed into a
# temporary prefix and moved into place last, so that a failed build leaves
# nothing that looks finished.
coturn_new_prefix=$cache/coturn-$coturn_new_version
coturn_new=$coturn_new_prefix/bin/turnserver
build_coturn_new() {
    local pkg
    for pkg in build-essential cmake pkg-config libevent-dev libssl-dev libsqlite3-dev libmicrohttpd-dev; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed'; then
            apt_install_keeping_services_stopped "$pkg" ""
        fi
    done
    [ -f "$coturn_tarball" ] || die "no coturn $coturn_new_version source release at $coturn_tarball (COTURN_TARBALL)"
    echo "$coturn_new_sha256  $coturn_tarball" | sha256sum -c --quiet - ||
        die "$coturn_tarball is not the coturn $coturn_new_version release (its sha256 differs)"
    mkdir -p "$cache"
    local work
    work=$(mktemp -d "$cache/coturn-build.XXXXXX")
    echo "building coturn $coturn_new_version into $coturn_new_prefix (once; log in $work/build.log)"
    tar -xzf "$coturn_tarball" -C "$work"
    {
        cmake -S "$work/coturn-$coturn_new_version" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
            -DCMAKE_INSTALL_PREFIX="$work/prefix" &&
            cmake --build "$work/build" -j"$(nproc)" &&
            cmake --install "$work/build"
    } >"$work/build.log" 2>&1 || die "building coturn $coturn_new_version failed: see $work/build.log"
    # Upstream install quirks: programs installed 0644, and turnadmin a symlink
    # into the build tree (which goes away).
    chmod 755 "$work/prefix/bin/"*
    if [ -L "$work/prefix/bin/turnadmin" ]; then
        cp --remove-destination "$(readlink -f "$work/prefix/bin/turnadmin")" "$work/prefix/bin/turnadmin"
    fi
    "$work/prefix/bin/turnserver" --version >/dev/null 2>&1 ||
        die "the coturn $coturn_new_version just built does not run: see $work/build.log"
    rm -rf "$coturn_new_prefix"
    mv "$work/prefix" "$coturn_new_prefix"
    rm -rf "$work"
}
# ferroturn_binary: prints the ferroturn to measure: $FERROTURN, or the release
# build of this checkout (built first; cargo's output goes to stderr).
ferroturn_binary() {
    local bin
    if [ -n "${FERROTURN:-}" ]; then
        bin=$FERROTURN
    else
        cargo build --release --bin ferroturn >&2
        bin=${CARGO_TARGET_DIR:-$repo/target}/release/ferroturn
    fi
    [ -x "$bin" ] || die "no ferroturn binary at $bin"
    echo "$bin"
}

# --- processes we start, and only those -------------------------------------------

started=()
cleanup() {
    local pid
    for pid in "${started[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${started[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}

# start NAME CPU CMD...: runs CMD pinned to CPU in the background; sets $pid.
start() {
    local name=$1 cpu=$2
    shift 2
    taskset -c "$cpu" "$@" >"$out/$name.log" 2>&1 &
    pid=$!
    started+=("$pid")
}

# stop PID: SIGTERM, then SIGKILL after 5 s.
stop() {
    local p=$1 i
    kill "$p" 2>/dev/null || return 0
    for i in $(seq 50); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}

load() {
    taskset -c 1 "$ferroturn" bench --threads 1 --quiet --json --user bench:bench "$@"
}

# Waits until a Binding request to $1 is answered.
wait_ready() {
    local addr=$1 i
    for i in $(seq 40); do
        if load --server "$addr" --duration 1s --count 1 --timeout 1s \
            binding --sockets 1 --window 1 2>/dev/null | jq -e '.results[0].received >= 1' >/dev/null; then
            return 0
        fi
        sleep 0.25
    done
    die "no Binding answer from $addr"
}

# A UDP port from $1 upwards that no socket of this host holds (/proc/net/udp
# and udp6 list every bound UDP socket, its local port in hexadecimal).
free_udp_port() {
    local p taken
    taken=$(awk 'NR > 1 { split($2, a, ":"); print a[length(a)] }' /proc/net/udp /proc/net/udp6 2>/dev/null | sort -u)
    for p in $(seq "$1" $(($1 + 200))); do
        if ! grep -qix "$(printf '%04X' "$p")" <<<"$taken"; then
            echo "$p"
            return 0
        fi
    done
    die "no free UDP port in $1-$(($1 + 200))"
}

# not_run KIND SERVER ROUND SHAPE WHY: records that SERVER did not run SHAPE (or a
# figure that is not a shape), and why, for the summary. KIND: unsupported (the
# server refuses it by design) or failed (anything else).
not_run() {
    jq -nc --arg k "$1" --arg s "$2" --argjson r "$3" --arg shape "$4" --arg why "$5" \
        '{server: $s, round: $r, shape: $shape, ($k): $why}' >>"$results"
}

# measure SERVER ROUND PID SHAPE ARGS...: one bench run; its rows go to $results,
# each with the server, the round and the shape (empty for figures that are not
# one of the relay shapes). A run that fails is recorded with the bench's error
# instead, and the run goes on: "unsupported" when the server answered a request
# with an error response (coturn's fast mode refusing a second allocation's
# ChannelBind to a peer it already relays for), "failed" otherwise.
measure() {
    local server=$1 round=$2 spid=$3 shape=$4
    shift 4
    local json err=$out/bench-last-error.log why
    echo "  $server: bench $*" >&2
    if ! json=$(load --server-pid "$spid" --duration "$duration" "$@" 2>"$err"); then
        {
            echo "$server round $round: bench $*"
            cat "$err"
        } >>"$out/bench-errors.log"
        why=$(grep -v '^[[:space:]]*$' "$err" | tail -1 | sed 's/^error: //' || true)
        echo "  $server: bench $* FAILED: $why" >&2
        # Not a shape: name the scenario (the first word after the options).
        [ -n "$shape" ] || shape="($(printf '%s\n' "$@" | grep -m1 -x '[a-z][a-z-]*' || echo ?))"
        local kind=failed
        [[ $why != *"error response"* ]] || kind=unsupported
        not_run "$kind" "$server" "$round" "$shape" "${why:-the bench exited with an error}"
        return 0
    fi
    jq -c --arg s "$server" --argjson r "$round" --arg shape "$shape" \
        '.results[] | . + {server: $s, round: $r, shape: $shape}' <<<"$json" >>"$results"
}


# coturn_new_args NAME IP PORT [MORE...]: sets the array coturn_args to coturn
# 4.17.1's command line, listening and relaying on IP (port PORT), one relay
# thread, user bench:bench, no TLS, DTLS, CLI or TCP relay, a fresh user
# database in $out, then MORE: in its fast mode for NAME coturn-4.17-fast (one
# shared relay socket per thread on a port of its own, recvmmsg, GSO sends),
# else in its standard mode (one relay socket per allocation).
coturn_new_args() {
    local name=$1 ip=$2 port=$3
    shift 3
    coturn_args=("$coturn_new" -n --listening-ip="$ip" --relay-ip="$ip"
        --listening-port="$port" --min-port=12000 --max-port=31999 --relay-threads=1
        --lt-cred-mech --user=bench:bench --realm=bench
        --no-cli --no-tls --no-dtls --no-tcp-relay --log-file=stdout --simple-log
        --userdb="$out/$name.turndb" --pidfile="$out/$name.pid" "$@")
    rm -f "$out/$name.turndb"
    if [ "$name" = coturn-4.17-fast ]; then
        coturn_args+=(--multiplex-peer --multiplex-peer-port="$(free_udp_port $((port + 10)))"
            --udp-gso --udp-recvmmsg)
    fi
}

# run_rounds: $rounds rounds, each running every server of $servers in turn
# (the caller's run_server NAME ROUND), between two lines with the load
# average.
run_rounds() {
    local round s
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    for round in $(seq "$rounds"); do
        for s in $servers; do
            echo "round $round/$rounds: $s" >&2
            run_server "$s" "$round"
        done
    done
    echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
}
