#!/usr/bin/env bash
# Long fuzzing runs, beyond the 20-second smoke test of scripts/test.sh:
#
#   scripts/fuzz-long.sh [-j N] [SECONDS_PER_TARGET] [TARGETS...]
#
# Runs every fuzz target (`cargo fuzz list`, or the TARGETS given) for
# SECONDS_PER_TARGET seconds (default 3600), one after another, or N at a time with
# -j N (default 1; each target is one libFuzzer process, so N cores). Each run starts
# from fuzz/corpus/<target> (new inputs go there) and the committed fuzz/seeds/<target>.
# Crash, timeout, leak and out-of-memory inputs are written to fuzz/artifacts/<target>/.
#
# Prints per target: seconds fuzzed (and wall seconds, which include a rebuild),
# executions (libFuzzer's stat::number_of_executed_units),
# coverage (cov:) and features (ft:) of the last status line, and the inputs found.
# Full logs: $FUZZ_TARGET_DIR/fuzz-long-<target>.log. Exits non-zero if any target
# found something or failed.
#
# Environment: FUZZ_TARGET_DIR (default fuzz/target), FUZZ_ARGS (extra libFuzzer
# options, e.g. "-rss_limit_mb=4096 -max_len=8192").
set -euo pipefail

usage() {
    sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

jobs=1
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        -j)
            [ $# -ge 2 ] || { echo "fuzz-long.sh: -j needs a number" >&2; exit 2; }
            jobs=$2
            shift 2
            ;;
        -j*)
            jobs=${1#-j}
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            args+=("$1")
            shift
            ;;
    esac
done
if ! [[ $jobs =~ ^[0-9]+$ ]] || [ "$jobs" -lt 1 ]; then
    echo "fuzz-long.sh: -j must be a positive whole number, not '$jobs'" >&2
    exit 2
fi

seconds=3600
if [ "${#args[@]}" -gt 0 ] && [[ ${args[0]} =~ ^[0-9]+$ ]]; then
    seconds=${args[0]}
    args=("${args[@]:1}")
fi
if [ "$seconds" -lt 1 ]; then
    echo "fuzz-long.sh: SECONDS_PER_TARGET must be at least 1" >&2
    exit 2
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fuzz_target_dir=${FUZZ_TARGET_DIR:-$repo/fuzz/target}
mkdir -p "$fuzz_target_dir"

# As scripts/test.sh: the unstable -Z flags of cargo fuzz on a stable toolchain, for
# the cargo fuzz commands only.
cargo_fuzz() {
    env RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$fuzz_target_dir" cargo fuzz "$@"
}

cargo fuzz --version >/dev/null 2>&1 || {
    echo "fuzz-long.sh: cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
    exit 1
}

if [ "${#args[@]}" -gt 0 ]; then
    targets=("${args[@]}")
else
    mapfile -t targets < <(cargo_fuzz list)
fi
[ "${#targets[@]}" -gt 0 ] || { echo "fuzz-long.sh: no fuzz targets" >&2; exit 1; }

echo "building the fuzz targets (cargo fuzz build)..."
cargo_fuzz build >"$fuzz_target_dir/fuzz-long-build.log" 2>&1 || {
    tail -n 40 "$fuzz_target_dir/fuzz-long-build.log"
    echo "fuzz-long.sh: cargo fuzz build failed" >&2
    exit 1
}
echo "fuzzing ${#targets[@]} target(s) for ${seconds}s each, $jobs at a time: ${targets[*]}"

# Runs one target; writes "target seconds wall executions cov ft found status" to its
# .result file.
run_one() {
    local t=$1
    local log="$fuzz_target_dir/fuzz-long-$t.log"
    local result="$fuzz_target_dir/fuzz-long-$t.result"
    local seeds=()
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
    local before
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    local started=$SECONDS rc=0
    # libFuzzer stops itself after -max_total_time; the outer timeout only guards
    # against a run that hangs on the way out.
    # shellcheck disable=SC2086
    timeout --signal=INT --kill-after=60 $((seconds + 600)) \
        env RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$fuzz_target_dir" \
        cargo fuzz run "$t" "fuzz/corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$seconds" -timeout=20 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" ${FUZZ_ARGS:-} >"$log" 2>&1 || rc=$?
    local wall=$((SECONDS - started))
    local execs cov ft status line took
    # The seconds libFuzzer fuzzed ("Done N runs in S second(s)"); the wall time
    # also counts a rebuild by cargo fuzz run.
    took=$(grep -aoE 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1 | grep -aoE 'in [0-9]+' | grep -aoE '[0-9]+' || true)
    took=${took:-$wall}
    execs=$(grep -aoE 'stat::number_of_executed_units: [0-9]+' "$log" | tail -1 | grep -aoE '[0-9]+$' || true)
    if [ -z "$execs" ]; then
        execs=$(grep -aoE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
    fi
    line=$(grep -aE '^#[0-9]+[[:space:]].*cov: ' "$log" | tail -1 || true)
    cov=$(grep -aoE 'cov: [0-9]+' <<<"$line" | grep -aoE '[0-9]+' || true)
    ft=$(grep -aoE 'ft: [0-9]+' <<<"$line" | grep -aoE '[0-9]+' || true)
    local after
    after=$(find "fuzz/artifacts/$t" -type f | wc -l)
    local found=$((after - before))
    if [ "$rc" -eq 0 ] && [ "$found" -eq 0 ]; then
        status=ok
    elif [ "$found" -gt 0 ]; then
        status="FOUND($rc)"
    else
        status="FAILED($rc)"
    fi
    echo "$t $took $wall ${execs:-?} ${cov:-?} ${ft:-?} $found $status" >"$result"
    printf '%-22s %6ss fuzzed (%ss wall)  %12s execs  cov %6s  ft %7s  found %s  %s\n' \
        "$t" "$took" "$wall" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$found" "$status"
    if [ "$status" != ok ]; then
        grep -aE 'panicked at|ERROR: libFuzzer|SUMMARY:|Test unit written to' "$log" | head -n 8 || true
        echo "  log: $log"
    fi
}

for t in "${targets[@]}"; do
    rm -f "$fuzz_target_dir/fuzz-long-$t.result"
done
running=0
for t in "${targets[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    run_one "$t" &
    running=$((running + 1))
done
wait || true

printf '\n%-22s %8s %8s %14s %8s %8s %6s  %s\n' target seconds wall executions cov ft found status
bad=0
for t in "${targets[@]}"; do
    r="$fuzz_target_dir/fuzz-long-$t.result"
    if [ -f "$r" ]; then
        read -r name took wall execs cov ft found status <"$r"
        printf '%-22s %8s %8s %14s %8s %8s %6s  %s\n' "$name" "$took" "$wall" "$execs" "$cov" "$ft" "$found" "$status"
        [ "$status" = ok ] || bad=1
    else
        printf '%-22s %8s %8s %14s %8s %8s %6s  %s\n' "$t" - - - - - - "no result"
        bad=1
    fi
done
if [ "$bad" -ne 0 ]; then
    echo "fuzz-long.sh: some targets found inputs or failed; see fuzz/artifacts/ and the logs" >&2
    exit 1
fi
