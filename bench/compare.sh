#!/usr/bin/env bash
# Compares ferroturn with coturn and turn-rs under the same `ferroturn bench` load,
# and with the ceiling of this machine (a plain batched UDP echo, and a plain
# batched forwarder in front of an echo), on loopback only:
#
#   bench/compare.sh
#
# Each round starts coturn, turn-rs, ferroturn and the ceiling one after the other
# (A B C D, A B C D, ...), each pinned to CPU 0 with the load pinned to CPU 1, runs
# every scenario against it and stops it again (by its PID). At the end it prints
# each figure's median over the rounds and the ratios ferroturn/coturn,
# ferroturn/turn-rs and ferroturn/ceiling (docs/performance.md explains them).
#
# Environment:
#   ROUNDS=N          rounds (default 3)
#   DURATION=D        length of each measurement (default 5s)
#   HOLD=N            allocations held for the memory figure (default 10000)
#   SERVERS="..."     subset/order of: coturn turn-rs ferroturn ceiling (default all)
#   OUT=DIR           where results and server logs go (default target/bench-compare)
#   BENCH_CACHE=DIR   where turn-rs is installed (default ~/.cache/ferroturn-bench)
#   FERROTURN=PATH    a ferroturn binary to use instead of building the release one
#
# It installs what is missing and nothing else: Debian's coturn package (its
# service kept stopped and disabled: this script starts turnserver by hand with a
# throwaway command line), protobuf-compiler and libprotobuf-dev (to build
# turn-rs), and turn-rs itself (`cargo install turn-server` into BENCH_CACHE).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

die() {
    echo "bench/compare.sh: $*" >&2
    exit 1
}
# shellcheck source=scripts/lib.sh
. "$repo/scripts/lib.sh"

rounds=${ROUNDS:-3}
duration=${DURATION:-5s}
hold=${HOLD:-10000}
servers=${SERVERS:-coturn turn-rs ferroturn ceiling}
out=${OUT:-$repo/target/bench-compare}
cache=${BENCH_CACHE:-$HOME/.cache/ferroturn-bench}
turn_rs_version=4.1.5
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive whole number, not '$rounds'"
[[ $hold =~ ^[1-9][0-9]*$ ]] || die "HOLD must be a positive whole number, not '$hold'"
for s in $servers; do
    case $s in coturn | turn-rs | ferroturn | ceiling) ;; *) die "unknown server '$s' in SERVERS" ;; esac
done
[ "$(nproc)" -ge 2 ] || die "needs two CPUs (the server on CPU 0, the load on CPU 1)"
command -v taskset >/dev/null 2>&1 || die "taskset is missing (util-linux)"
command -v jq >/dev/null 2>&1 || apt_install_keeping_services_stopped jq ""

# --- what we need ------------------------------------------------------------------

if ! command -v turnserver >/dev/null 2>&1; then
    echo "turnserver missing: installing the coturn package (service kept stopped)"
    apt_install_keeping_services_stopped coturn coturn
fi
turn_rs=$cache/turn-rs/bin/turn-server
if [ ! -x "$turn_rs" ]; then
    command -v protoc >/dev/null 2>&1 || apt_install_keeping_services_stopped protobuf-compiler ""
    [ -e /usr/include/google/protobuf/empty.proto ] || apt_install_keeping_services_stopped libprotobuf-dev ""
    echo "building turn-rs $turn_rs_version into $cache/turn-rs (once)"
    CARGO_TARGET_DIR=$cache/turn-rs-target cargo install turn-server --version "$turn_rs_version" \
        --locked --root "$cache/turn-rs"
fi
if [ -n "${FERROTURN:-}" ]; then
    ferroturn=$FERROTURN
else
    cargo build --release --bin ferroturn
    ferroturn=${CARGO_TARGET_DIR:-$repo/target}/release/ferroturn
fi
[ -x "$ferroturn" ] || die "no ferroturn binary at $ferroturn"

mkdir -p "$out"
results=$out/results.jsonl
: >"$results"
ulimit -n "$(ulimit -Hn)"

# --- processes we start, and only those ---------------------------------------------

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
trap cleanup EXIT

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

# measure SERVER ROUND PID ARGS...: one bench run; its rows go to $results.
measure() {
    local server=$1 round=$2 spid=$3
    shift 3
    local json
    echo "  $server: bench $*" >&2
    if ! json=$(load --server-pid "$spid" --duration "$duration" "$@" 2>>"$out/bench-errors.log"); then
        echo "  $server: bench $* FAILED (see $out/bench-errors.log)" >&2
        return 0
    fi
    jq -c --arg s "$server" --argjson r "$round" '.results[] | . + {server: $s, round: $r}' \
        <<<"$json" >>"$results"
}

port=34780
turn_scenarios() {
    local name=$1 round=$2 spid=$3 addr=$4 echo_peer=$5
    # Memory first, on a fresh server: later scenarios grow heaps that the
    # allocator keeps, which would hide what an allocation costs.
    measure "$name" "$round" "$spid" --server "$addr" hold --allocations "$hold"
    measure "$name" "$round" "$spid" --server "$addr" binding
    measure "$name" "$round" "$spid" --server "$addr" alloc
    if [ "$echo_peer" = yes ]; then
        measure "$name" "$round" "$spid" --server "$addr" relay --peer echo
        measure "$name" "$round" "$spid" --server "$addr" relay --peer client
        measure "$name" "$round" "$spid" --server "$addr" latency --peer echo,client
    else
        # turn-rs relays only between its own allocations (virtual ports).
        measure "$name" "$round" "$spid" --server "$addr" relay --peer client
        measure "$name" "$round" "$spid" --server "$addr" latency --peer client
    fi
}

run_coturn() {
    local round=$1 addr=127.0.0.1:$port
    start coturn 0 turnserver -n --listening-ip=127.0.0.1 --relay-ip=127.0.0.1 \
        --listening-port="$port" --min-port=12000 --max-port=31999 --relay-threads=1 \
        --lt-cred-mech --user=bench:bench --realm=bench --allow-loopback-peers \
        --no-cli --no-tls --no-dtls --no-tcp-relay --log-file=stdout --simple-log \
        --pidfile="$out/turnserver.pid"
    wait_ready "$addr"
    turn_scenarios coturn "$round" "$pid" "$addr" yes
    stop "$pid"
}

run_turn_rs() {
    local round=$1 addr=127.0.0.1:$port conf=$out/turn-rs.toml
    cat >"$conf" <<EOF
[server]
realm = "bench"
port-range = "12000..32000"
max-threads = 1

[[server.interfaces]]
transport = "udp"
listen = "$addr"
external = "$addr"
idle-timeout = 600

[log]
level = "error"

[auth.static-credentials]
bench = "bench"
EOF
    start turn-rs 0 "$turn_rs" --config "$conf"
    wait_ready "$addr"
    turn_scenarios turn-rs "$round" "$pid" "$addr" no
    stop "$pid"
}

run_ferroturn() {
    local round=$1 addr=127.0.0.1:$port
    start ferroturn 0 "$ferroturn" serve --listen "$addr" --relay-ip 127.0.0.1 \
        --relay-ports 12000-31999 --threads 1 --realm bench --user bench:bench \
        --allow-peer 127.0.0.0/8 --max-allocations-per-user 1000000 --max-allocations-per-ip 0 \
        --unauthenticated-per-second 0 \
        --metrics 127.0.0.1:0 --admin-socket off --log-level warn
    wait_ready "$addr"
    turn_scenarios ferroturn "$round" "$pid" "$addr" yes
    stop "$pid"
}

run_ceiling() {
    local round=$1 addr=127.0.0.1:$port echo_addr=127.0.0.1:$((port + 1))
    # The plain echo as the server: the Binding ceiling.
    start echo 0 "$ferroturn" bench echo-server --listen "$addr" --duration 1h
    local echo_pid=$pid
    wait_ready "$addr"
    measure ceiling "$round" "$echo_pid" --server "$addr" binding
    stop "$echo_pid"
    # client → forwarder (CPU 0) → echo peer (CPU 1, beside the load, like the
    # bench's own echo peer) and back: the relay ceiling.
    start echo-peer 1 "$ferroturn" bench echo-server --listen "$echo_addr" --duration 1h
    local peer_pid=$pid
    start forwarder 0 "$ferroturn" bench echo-server --listen "$addr" --forward-to "$echo_addr" --duration 1h
    local fwd_pid=$pid
    wait_ready "$addr"
    measure ceiling "$round" "$fwd_pid" --server "$addr" relay --plain
    stop "$fwd_pid"
    stop "$peer_pid"
}

echo "ferroturn: $ferroturn"
echo "coturn: $(turnserver --version 2>/dev/null | head -1)  turn-rs: $turn_rs_version"
echo "rounds: $rounds, $duration per measurement, hold $hold; results in $results"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$rounds"); do
    for s in $servers; do
        echo "round $round/$rounds: $s" >&2
        case $s in
            coturn) run_coturn "$round" ;;
            turn-rs) run_turn_rs "$round" ;;
            ferroturn) run_ferroturn "$round" ;;
            ceiling) run_ceiling "$round" ;;
        esac
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
jq -s -r -f "$repo/bench/summarize.jq" "$results" | tee "$out/summary.md"
