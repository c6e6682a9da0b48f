#!/usr/bin/env bash
# Relayed round trips with and without the XDP fast path ([offload]), and what
# they cost the whole machine: the server runs in a network namespace of this
# script's own, behind a veth pair whose other end (with `ferroturn bench relay`
# and its echo peer) stays here, so every packet crosses the interface the XDP
# program is attached to (XDP on `lo` cannot serve: the client, the server and
# the peer would share one address and one interface).
#
#   bench/offload.sh [--rounds N] [--duration D] [--allocations N] [--window N]
#                    [--mode generic|native|auto] [--bin PATH]
#
# Alternates rounds off, on, off, on, ... (the machine is shared and noisy), and
# prints per round: round trips/s, and whole-machine CPU per round trip (the
# non-idle time of all CPUs from /proc/stat over the run, server + kernel +
# load generator, divided by round trips), then the medians. Needs root (`ip
# netns`, BPF). Default binary: target/release/ferroturn (cargo build --release).
# Traffic stays on the veth pair in 198.18.X.0/30 (the benchmarking range).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=3
duration=5s
allocations=1
window=64
mode=generic
bin=target/release/ferroturn
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --allocations) allocations=$2; shift 2 ;;
        --window) window=$2; shift 2 ;;
        --mode) mode=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench/offload.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "bench/offload.sh: needs root (ip netns, BPF)" >&2; exit 1; }
[ -x "$bin" ] || { echo "bench/offload.sh: $bin missing (cargo build --release)" >&2; exit 1; }
command -v jq >/dev/null || { echo "bench/offload.sh: needs jq" >&2; exit 1; }

id=$$
ns=ft-bench-$id
outer=ftbo$((id % 100000))
inner=ftbi$((id % 100000))
net=$((id % 250 + 1))
here=198.18.$net.1
there=198.18.$net.2
work=$(mktemp -d)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    ip link del "$outer" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns"
ip link add "$outer" type veth peer name "$inner"
ip link set "$inner" netns "$ns"
ip addr add "$here/30" dev "$outer"
ip link set "$outer" up
ip -n "$ns" link set lo up
ip -n "$ns" addr add "$there/30" dev "$inner"
ip -n "$ns" link set "$inner" up

# Whole-machine busy jiffies (all CPUs: user nice system irq softirq steal).
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
hz=$(getconf CLK_TCK)

run_round() {
    local offload=$1
    cat >"$work/turnserver.toml" <<TOML
[server]
listen = ["$there:3478"]
threads = 1
log-level = "info"
[relay]
relay-ips = ["$there"]
[auth.users]
bench = "bench"
[peers]
allow = ["198.18.0.0/15"]
[admin]
socket = "$work/admin.sock"
[offload]
enabled = $offload
interfaces = ["$inner"]
mode = "$mode"
TOML
    ip netns exec "$ns" "$bin" serve --config "$work/turnserver.toml" 2>"$work/server.log" &
    server_pid=$!
    sleep 1
    local b0 b1 out
    b0=$(busy)
    out=$("$bin" bench --server "$there:3478" --user bench:bench --duration "$duration" --json --quiet \
        relay --mode channel --peer echo --allocations "$allocations" --window "$window" --peer-ip "$here")
    b1=$(busy)
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
    if [ "$offload" = true ] && ! grep -q "fast path attached" "$work/server.log"; then
        echo "offload did not attach:" >&2; cat "$work/server.log" >&2; exit 1
    fi
    echo "$out" >"$work/last.json"
    local rate rtts secs
    rate=$(jq -r '[.. | objects | select(has("rate_per_s")) | .rate_per_s][0] // empty' "$work/last.json")
    rtts=$(jq -r '[.. | objects | select(has("received")) | .received][0] // empty' "$work/last.json")
    secs=$(awk -v d="$((b1 - b0))" -v hz="$hz" 'BEGIN{print d/hz}')
    if [ -z "$rate" ] || [ -z "$rtts" ] || [ "$rtts" = 0 ]; then
        echo "could not read the bench's JSON:" >&2; cat "$work/last.json" >&2; exit 1
    fi
    awk -v o="$offload" -v r="$rate" -v n="$rtts" -v s="$secs" \
        'BEGIN{printf "%-8s %12.0f %12.2f\n", (o=="true"?"on":"off"), r, s*1e6/n}'
}

printf '%-8s %12s %12s\n' offload "rtt/s" "µs CPU/rtt"
for i in $(seq 1 "$rounds"); do
    run_round false | tee -a "$work/results"
    run_round true | tee -a "$work/results"
done
echo "medians (whole machine, $allocations flow(s) x $window in flight, 100 B ChannelData, echo peer):"
median() { sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
for o in off on; do
    r=$(awk -v o="$o" '$1==o{print $2}' "$work/results" | median)
    c=$(awk -v o="$o" '$1==o{print $3}' "$work/results" | median)
    printf '  offload %-3s %10s rtt/s %8s µs CPU/rtt\n' "$o" "$r" "$c"
done
