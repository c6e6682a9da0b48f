#!/usr/bin/env bash
# Relayed round trips with and without ferroturn's XDP fast path ([offload]),
# beside coturn 4.17.1 in its fast and its standard mode, and what each costs
# the whole machine. Every server runs in a network namespace of this script's
# own, behind a veth pair whose other end (with `ferroturn bench relay` and its
# echo peer) stays here, so every packet crosses the interface the XDP program
# is attached to (XDP on `lo` cannot serve: the client, the server and the peer
# would share one address and one interface).
#
#   bench/offload.sh
#
# Each round starts the servers one after the other (pinned to CPU 0, the load
# to CPU 1), runs every shape against each and stops it by its PID. Shapes:
# 100-byte ChannelData to an echo peer, one flow with 64 in flight (1x64) and 8
# flows with 16 each (8x16; coturn's fast mode refuses a second allocation's
# ChannelBind to the one echo peer, shown "unsupported"). The figure that
# matters is the whole-machine CPU per round trip (all CPUs from /proc/stat:
# server, kernel, XDP and load generator), because the offload moves the work
# from the server's process into the kernel's receive path, which runs on
# whichever CPU takes the packet. At the end: per shape, medians over the
# rounds, and ratios (bench/summarize.jq, as bench/compare.sh prints them).
#
# Environment:
#   ROUNDS=N        rounds (default 3)
#   DURATION=D      length of each measurement (default 5s)
#   SERVERS="..."   subset/order of: ferroturn ferroturn-offload coturn-4.17-fast
#                   coturn-4.17 (default all)
#   SHAPES="..."    subset/order of: 1x64 8x16 (default both)
#   MODE=M          the XDP attach mode: generic (default) or native. Native
#                   mode on a veth needs an XDP program on the pair's other end
#                   (docs/offload.md, "Native mode on a veth"): with MODE=native
#                   this script gives the outer end one (bpf/channel_offload.o
#                   with empty maps, loaded by iproute2: it passes everything),
#                   turns that end's checksum offload off (the fast path
#                   updates full checksums, not partial ones) and sets
#                   native-on-veth. That outer end then plays a NIC's part and
#                   the link is the same for every server of the run (so
#                   figures of the two modes are not comparable run to run).
#   OUT=DIR         results and server logs (default target/bench-offload)
#   BENCH_CACHE=DIR where coturn 4.17.1 is built (default ~/.cache/ferroturn-bench;
#                   built there once, as bench/compare.sh does)
#   FERROTURN=PATH  the ferroturn binary (default: cargo build --release)
#
# Needs root (`ip netns`, BPF). Traffic stays on the veth pair, in
# 198.18.X.0/30 (the benchmarking range).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

die() {
    echo "bench/offload.sh: $*" >&2
    exit 1
}
# shellcheck source=scripts/lib.sh
. "$repo/scripts/lib.sh"
cache=${BENCH_CACHE:-$HOME/.cache/ferroturn-bench}
# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"

rounds=${ROUNDS:-3}
duration=${DURATION:-5s}
servers=${SERVERS:-ferroturn ferroturn-offload coturn-4.17-fast coturn-4.17}
shapes=${SHAPES:-1x64 8x16}
mode=${MODE:-generic}
out=${OUT:-$repo/target/bench-offload}
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive whole number, not '$rounds'"
case $mode in generic | native) ;; *) die "MODE must be generic or native, not '$mode'" ;; esac
server_labels='{"ferroturn": "ferroturn", "ferroturn-offload": "ferroturn + offload",
  "coturn-4.17-fast": "coturn 4.17.1 fast", "coturn-4.17": "coturn 4.17.1"}'
for s in $servers; do
    jq -e --arg s "$s" 'has($s)' <<<"$server_labels" >/dev/null 2>&1 ||
        die "unknown server '$s' in SERVERS (known: ferroturn ferroturn-offload coturn-4.17-fast coturn-4.17)"
done
for sh in $shapes; do
    case $sh in 1x64 | 8x16) ;; *) die "unknown shape '$sh' in SHAPES (known: 1x64 8x16)" ;; esac
done
[ "$(id -u)" -eq 0 ] || die "needs root (ip netns, BPF)"
[ "$(nproc)" -ge 2 ] || die "needs two CPUs (the server on CPU 0, the load on CPU 1)"
command -v jq >/dev/null 2>&1 || apt_install_keeping_services_stopped jq ""

if [[ " $servers " == *" coturn-4.17"* ]] && [ ! -x "$coturn_new" ]; then
    build_coturn_new
fi
ferroturn=$(ferroturn_binary)

mkdir -p "$out"
results=$out/results.jsonl
: >"$results"
: >"$out/bench-errors.log"

# --- the namespace and the veth pair -----------------------------------------------

id=$$
ns=ft-bench-$id
outer=ftbo$((id % 100000))
inner=ftbi$((id % 100000))
net=$((id % 250 + 1))
here=198.18.$net.1
there=198.18.$net.2
port=3478
finish() {
    cleanup
    ip link del "$outer" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
}
trap finish EXIT
ip netns add "$ns"
ip link add "$outer" type veth peer name "$inner"
ip link set "$inner" netns "$ns"
ip addr add "$here/30" dev "$outer"
ip link set "$outer" up
if [ "$mode" = native ]; then
    command -v ethtool >/dev/null 2>&1 || apt_install_keeping_services_stopped ethtool ""
    ip link set dev "$outer" xdpdrv obj "$repo/bpf/channel_offload.o" sec xdp ||
        die "could not attach an XDP program to $outer (iproute2 with libbpf needed)"
    ethtool -K "$outer" tx off >/dev/null || die "ethtool -K $outer tx off failed"
fi
ip -n "$ns" link set lo up
ip -n "$ns" addr add "$there/30" dev "$inner"
ip -n "$ns" link set "$inner" up

# --- the servers ------------------------------------------------------------------

shape_args() {
    case $1 in
        1x64) echo "--allocations 1 --window 64" ;;
        8x16) echo "--allocations 8 --window 16" ;;
    esac
}

# serve NAME ROUND CMD...: starts CMD in the namespace on CPU 0, measures every
# shape against it, stops it.
serve() {
    local name=$1 round=$2 addr=$there:$port sh
    shift 2
    start "$name" 0 ip netns exec "$ns" "$@"
    wait_ready "$addr"
    if [ "$name" = ferroturn-offload ] && ! grep -q "fast path attached" "$out/$name.log"; then
        die "the offload did not attach (see $out/$name.log)"
    fi
    for sh in $shapes; do
        # shellcheck disable=SC2046 # shape_args prints words meant to be split
        measure "$name" "$round" "$pid" "$sh" --server "$addr" relay --mode channel --size 100 \
            --peer echo --peer-ip "$here" $(shape_args "$sh")
    done
    stop "$pid"
}

run_ferroturn() {
    local name=$1 round=$2 offload=false
    [ "$name" = ferroturn ] || offload=true
    cat >"$out/$name.toml" <<TOML
[server]
listen = ["$there:$port"]
threads = 1
log-level = "info"
[relay]
relay-ips = ["$there"]
[auth.users]
bench = "bench"
[quota]
max-allocations-per-user = 1000000
[rate-limit]
unauthenticated-per-second = 0
[peers]
allow = ["198.18.0.0/15"]
[admin]
socket = ""
[offload]
enabled = $offload
interfaces = ["$inner"]
mode = "$mode"
native-on-veth = true
TOML
    serve "$name" "$round" "$ferroturn" serve --config "$out/$name.toml"
}

run_server() {
    case $1 in
        ferroturn | ferroturn-offload) run_ferroturn "$1" "$2" ;;
        coturn-4.17-fast | coturn-4.17)
            coturn_new_args "$1" "$there" "$port"
            serve "$1" "$2" "${coturn_args[@]}"
            ;;
    esac
}

echo "ferroturn: $ferroturn (offload mode $mode, on $inner in namespace $ns)"
echo "servers: $servers; shapes: $shapes; rounds: $rounds, $duration per measurement"
run_rounds
jq -s -r --argjson labels "$server_labels" \
    --argjson subjects '["ferroturn-offload", "ferroturn"]' \
    --argjson references '["coturn-4.17-fast", "coturn-4.17", "ferroturn"]' \
    --arg order "$servers" -f "$repo/bench/summarize.jq" "$results" | tee "$out/summary.md"
