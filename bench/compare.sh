#!/usr/bin/env bash
# Compares ferroturn with coturn (Debian's 4.6.1, and 4.17.1 built from source in
# its fast and its standard mode) and turn-rs under the same `ferroturn bench`
# load, and with the ceiling of this machine (a plain batched UDP echo, and a plain
# batched forwarder in front of an echo), on loopback only:
#
#   bench/compare.sh
#
# Each round starts the servers one after the other (A B C ..., A B C ..., ...),
# each pinned to CPU 0 with the load pinned to CPU 1, runs every scenario against
# it and stops it again (by its PID). The relay is measured in three traffic
# shapes, 100-byte ChannelData each: one flow with 64 datagrams in flight
# (`1x64`), 8 flows with 16 each (`8x16`), both to an echo peer, and client to
# client (`c2c`, 8 flows × 16: two allocations of the server relaying to each
# other). Every row carries the server's CPU and the whole machine's CPU (all
# CPUs, /proc/stat) per operation. At the end it prints, per shape, each figure's
# median over the rounds and the ratios of ferroturn against every coturn, then
# the other figures (docs/performance.md explains them). A server that cannot run
# a shape (coturn's fast mode: two allocations to one peer, client to client;
# turn-rs: no echo peer) is shown "unsupported", with the reason, and the run
# goes on.
#
# Environment:
#   ROUNDS=N          rounds (default 3)
#   DURATION=D        length of each measurement (default 5s)
#   HOLD=N            allocations held for the memory figure (default 10000)
#   SERVERS="..."     subset/order of: coturn (4.6.1) coturn-4.17-fast coturn-4.17
#                     turn-rs ferroturn ceiling (default all)
#   SHAPES="..."      subset/order of: 1x64 8x16 c2c (default all)
#   SHAPES_ONLY=1     only the shapes' 100-byte ChannelData rows: no hold, Binding,
#                     allocation, Send-indication, 1200-byte or latency figures
#   OUT=DIR           where results and server logs go (default target/bench-compare)
#   BENCH_CACHE=DIR   where turn-rs and coturn 4.17.1 are installed
#                     (default ~/.cache/ferroturn-bench)
#   COTURN_TARBALL=F  the coturn 4.17.1 source release
#                     (default ../shared/anchors/coturn-4.17.1.tar.gz)
#   FERROTURN=PATH    a ferroturn binary to use instead of building the release one
#   PREPARE_ONLY=1    install and build what the SERVERS need, then stop
#
# It installs what is missing and nothing else: Debian's coturn package (its
# service kept stopped and disabled: this script starts turnserver by hand with a
# throwaway command line), protobuf-compiler and libprotobuf-dev (to build
# turn-rs), and turn-rs itself (`cargo install turn-server` into BENCH_CACHE);
# for coturn 4.17.1 its Debian build dependencies, and coturn itself, built with
# cmake into BENCH_CACHE (never installed as a service, never started but by this
# script).
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
servers=${SERVERS:-coturn coturn-4.17-fast coturn-4.17 turn-rs ferroturn ceiling}
shapes=${SHAPES:-1x64 8x16 c2c}
shapes_only=${SHAPES_ONLY:-0}
out=${OUT:-$repo/target/bench-compare}
cache=${BENCH_CACHE:-$HOME/.cache/ferroturn-bench}
turn_rs_version=4.1.5
# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive whole number, not '$rounds'"
[[ $hold =~ ^[1-9][0-9]*$ ]] || die "HOLD must be a positive whole number, not '$hold'"
[[ $shapes_only =~ ^[01]$ ]] || die "SHAPES_ONLY must be 0 or 1, not '$shapes_only'"
command -v jq >/dev/null 2>&1 || apt_install_keeping_services_stopped jq ""
# Every server this script knows, in the summary's column order, with its label.
# A new server (say ferroturn with some `serve` option) needs an entry here, a
# case in run_server below, and nothing else: the summary takes its columns from
# this list, and its ratio columns from `subjects`. (ferroturn with its XDP
# offload is measured by bench/offload.sh: XDP needs an interface other than lo.)
server_labels='{"coturn": "coturn 4.6.1", "coturn-4.17-fast": "coturn 4.17.1 fast",
  "coturn-4.17": "coturn 4.17.1", "turn-rs": "turn-rs", "ferroturn": "ferroturn",
  "ceiling": "ceiling"}'
# The servers whose ratios the summary prints, against each of `references`.
subjects='["ferroturn"]'
references='["coturn-4.17-fast", "coturn-4.17", "coturn", "turn-rs", "ceiling"]'
for s in $servers; do
    jq -e --arg s "$s" 'has($s)' <<<"$server_labels" >/dev/null ||
        die "unknown server '$s' in SERVERS (known: $(jq -r 'keys_unsorted | join(" ")' <<<"$server_labels"))"
done
for sh in $shapes; do
    case $sh in 1x64 | 8x16 | c2c) ;; *) die "unknown shape '$sh' in SHAPES (known: 1x64 8x16 c2c)" ;; esac
done
[ "$(nproc)" -ge 2 ] || die "needs two CPUs (the server on CPU 0, the load on CPU 1)"
command -v taskset >/dev/null 2>&1 || die "taskset is missing (util-linux)"

wants() {
    [[ " $servers " == *" $1 "* ]]
}

# --- what we need ------------------------------------------------------------------

if wants coturn && ! command -v turnserver >/dev/null 2>&1; then
    echo "turnserver missing: installing the coturn package (service kept stopped)"
    apt_install_keeping_services_stopped coturn coturn
fi
turn_rs=$cache/turn-rs/bin/turn-server
if wants turn-rs && [ ! -x "$turn_rs" ]; then
    command -v protoc >/dev/null 2>&1 || apt_install_keeping_services_stopped protobuf-compiler ""
    [ -e /usr/include/google/protobuf/empty.proto ] || apt_install_keeping_services_stopped libprotobuf-dev ""
    echo "building turn-rs $turn_rs_version into $cache/turn-rs (once)"
    CARGO_TARGET_DIR=$cache/turn-rs-target cargo install turn-server --version "$turn_rs_version" \
        --locked --root "$cache/turn-rs"
fi

if { wants coturn-4.17-fast || wants coturn-4.17; } && [ ! -x "$coturn_new" ]; then
    build_coturn_new
fi
ferroturn=$(ferroturn_binary)
if [ "${PREPARE_ONLY:-0}" = 1 ]; then
    echo "prepared: $servers"
    exit 0
fi

mkdir -p "$out"
results=$out/results.jsonl
: >"$results"
: >"$out/bench-errors.log"
ulimit -n "$(ulimit -Hn)"
trap cleanup EXIT

# shape_args SHAPE: the relay arguments of a traffic shape. Its figure is the
# 100-byte ChannelData row; without SHAPES_ONLY=1, 8x16 and c2c also measure Send
# indications and 1200-byte payloads (the relay figures of earlier versions).
shape_args() {
    local more="--mode channel --size 100"
    if [ "$shapes_only" = 0 ] && [ "$1" != 1x64 ]; then
        more="--mode channel,send --size 100,1200"
    fi
    case $1 in
        1x64) echo "--allocations 1 --window 64 --peer echo $more" ;;
        8x16) echo "--allocations 8 --window 16 --peer echo $more" ;;
        c2c) echo "--allocations 8 --window 16 --peer client $more" ;;
    esac
}

port=34780
# turn_scenarios NAME ROUND PID ADDR ECHO_PEER: everything against one TURN
# server. ECHO_PEER=no: the server cannot relay to a peer outside itself.
turn_scenarios() {
    local name=$1 round=$2 spid=$3 addr=$4 echo_peer=$5 sh
    if [ "$shapes_only" = 0 ]; then
        # Memory first, on a fresh server: later scenarios grow heaps that the
        # allocator keeps, which would hide what an allocation costs.
        measure "$name" "$round" "$spid" "" --server "$addr" hold --allocations "$hold"
        measure "$name" "$round" "$spid" "" --server "$addr" binding
        measure "$name" "$round" "$spid" "" --server "$addr" alloc
    fi
    for sh in $shapes; do
        if [ "$echo_peer" = no ] && [ "$sh" != c2c ]; then
            not_run unsupported "$name" "$round" "$sh" \
                "relays only between its own allocations (virtual ports, no relay sockets): no echo peer"
            continue
        fi
        # shellcheck disable=SC2046 # shape_args prints words meant to be split
        measure "$name" "$round" "$spid" "$sh" --server "$addr" relay $(shape_args "$sh")
    done
    if [ "$shapes_only" = 0 ]; then
        if [ "$echo_peer" = yes ]; then
            measure "$name" "$round" "$spid" "" --server "$addr" latency --peer echo,client
        else
            measure "$name" "$round" "$spid" "" --server "$addr" latency --peer client
        fi
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

# run_coturn_new ROUND NAME: coturn 4.17.1 in its fast or standard mode (see
# coturn_new_args), with the Debian coturn's loopback-only flags.
run_coturn_new() {
    local round=$1 name=$2 addr=127.0.0.1:$port
    coturn_new_args "$name" 127.0.0.1 "$port" --allow-loopback-peers
    start "$name" 0 "${coturn_args[@]}"
    wait_ready "$addr"
    turn_scenarios "$name" "$round" "$pid" "$addr" yes
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

# run_ferroturn ROUND NAME [SERVE-ARGS...]: ferroturn with one thread; variants
# pass more `serve` arguments (e.g. --config FILE with an [offload] section).
run_ferroturn() {
    local round=$1 name=$2 addr=127.0.0.1:$port
    shift 2
    start "$name" 0 "$ferroturn" serve --listen "$addr" --relay-ip 127.0.0.1 \
        --relay-ports 12000-31999 --threads 1 --realm bench --user bench:bench \
        --allow-peer 127.0.0.0/8 --max-allocations-per-user 1000000 --max-allocations-per-ip 0 \
        --unauthenticated-per-second 0 \
        --metrics 127.0.0.1:0 --admin-socket off --log-level warn "$@"
    wait_ready "$addr"
    turn_scenarios "$name" "$round" "$pid" "$addr" yes
    stop "$pid"
}

run_ceiling() {
    local round=$1 addr=127.0.0.1:$port echo_addr=127.0.0.1:$((port + 1)) sh sizes
    if [ "$shapes_only" = 0 ]; then
        # The plain echo as the server: the Binding ceiling.
        start echo 0 "$ferroturn" bench echo-server --listen "$addr" --duration 1h
        local echo_pid=$pid
        wait_ready "$addr"
        measure ceiling "$round" "$echo_pid" "" --server "$addr" binding
        stop "$echo_pid"
    fi
    # client → forwarder (CPU 0) → echo peer (CPU 1, beside the load, like the
    # bench's own echo peer) and back: the relay ceiling of the echo-peer shapes.
    start echo-peer 1 "$ferroturn" bench echo-server --listen "$echo_addr" --duration 1h
    local peer_pid=$pid
    start forwarder 0 "$ferroturn" bench echo-server --listen "$addr" --forward-to "$echo_addr" --duration 1h
    local fwd_pid=$pid
    wait_ready "$addr"
    for sh in $shapes; do
        sizes=100
        [ "$shapes_only" = 1 ] || [ "$sh" = 1x64 ] || sizes=100,1200
        case $sh in
            1x64) measure ceiling "$round" "$fwd_pid" "$sh" --server "$addr" relay --plain \
                --allocations 1 --window 64 --size "$sizes" ;;
            8x16) measure ceiling "$round" "$fwd_pid" "$sh" --server "$addr" relay --plain \
                --allocations 8 --window 16 --size "$sizes" ;;
        esac
    done
    stop "$fwd_pid"
    stop "$peer_pid"
}

# run_server NAME ROUND: one server's turn in a round.
run_server() {
    case $1 in
        coturn) run_coturn "$2" ;;
        coturn-4.17-fast | coturn-4.17) run_coturn_new "$2" "$1" ;;
        turn-rs) run_turn_rs "$2" ;;
        ferroturn) run_ferroturn "$2" ferroturn ;;
        # A variant, with an entry in server_labels:
        # ferroturn-NAME) run_ferroturn "$2" ferroturn-NAME --some-option ;;
        ceiling) run_ceiling "$2" ;;
    esac
}

echo "ferroturn: $ferroturn"
if wants coturn; then echo "coturn: $(turnserver --version 2>/dev/null | head -1)"; fi
if wants coturn-4.17-fast || wants coturn-4.17; then
    echo "coturn $coturn_new_version: $coturn_new ($("$coturn_new" --version 2>/dev/null | head -1))"
fi
if wants turn-rs; then echo "turn-rs: $turn_rs_version"; fi
echo "servers: $servers; shapes: $shapes$([ "$shapes_only" = 1 ] && echo " (shapes only)" || true)"
echo "rounds: $rounds, $duration per measurement, hold $hold; results in $results"
run_rounds
jq -s -r --argjson labels "$server_labels" --argjson subjects "$subjects" \
    --argjson references "$references" --arg order "$servers" \
    -f "$repo/bench/summarize.jq" "$results" | tee "$out/summary.md"
