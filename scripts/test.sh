#!/usr/bin/env bash
# The one command that runs every check of ferroturn, locally and in CI:
#
#   scripts/test.sh            format, lints, the test suite, a short fuzz run
#   scripts/test.sh --quick    the test suite only
#
# Environment:
#   SKIP_FUZZ=1        skip the fuzz step
#   FUZZ_SECONDS=N     fuzz each target for N seconds (default 20)
#   CARGO_TARGET_DIR   as usual for the main crate; the fuzz build always goes to
#                      fuzz/target (or FUZZ_TARGET_DIR), it uses other compiler flags
#
# It installs what the suite needs when it is missing, and nothing else: the coturn
# package for turnutils_stunclient / turnutils_uclient / turnutils_peer (its
# turnserver service is never started or enabled), the postgresql package for the
# store tests (which start their own throwaway server; the package's cluster is never
# started), Debian's chromium package and playwright-core (`npm ci` in tests/browser)
# for the browser test, the prometheus package for promtool (tests/monitoring.rs
# checks contrib/monitoring/alerts.yml with it; the prometheus service is never
# started or enabled), kubectl (Debian's kubernetes-client package) and
# kubernetes-validate (PyPI, with pip) for tests/kubernetes.rs, which renders
# contrib/kubernetes with `kubectl kustomize` and validates it against bundled
# schemas, both offline and without a cluster, and cargo-fuzz for the fuzz step.
# Safe to run again and again: every install is skipped when already done.
set -euo pipefail

usage() {
    sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

quick=0
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "scripts/test.sh: unknown argument '$arg' (try --help)" >&2
            exit 2
            ;;
    esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fuzz_seconds=${FUZZ_SECONDS:-20}
if ! [[ $fuzz_seconds =~ ^[0-9]+$ ]] || [ "$fuzz_seconds" -lt 1 ]; then
    echo "FUZZ_SECONDS must be a positive whole number of seconds, not '$fuzz_seconds'" >&2
    exit 2
fi
run_fuzz=1
if [ "$quick" = 1 ] || [ "${SKIP_FUZZ:-0}" = 1 ]; then
    run_fuzz=0
fi

step_names=()
step_times=()
step_results=()
failed=()

# Runs one step: a header, the command, its time and result. A failing step does not
# stop the others (one CI run shows every problem); the script fails at the end.
run_step() {
    local name=$1
    shift
    printf '\n==== %s ====\n' "$name"
    local started=$SECONDS rc=0
    "$@" || rc=$?
    step_names+=("$name")
    step_times+=("$((SECONDS - started))")
    if [ "$rc" -eq 0 ]; then
        step_results+=(ok)
    else
        step_results+=("FAILED (exit $rc)")
        failed+=("$name")
        printf '\n---- step failed: %s (exit %s) ----\n' "$name" "$rc" >&2
    fi
}

summary() {
    local status=$?
    if [ "${#step_names[@]}" -gt 0 ]; then
        printf '\n==== summary ====\n'
        local i
        for i in "${!step_names[@]}"; do
            printf '%5ss  %-45s %s\n' "${step_times[$i]}" "${step_names[$i]}" "${step_results[$i]}"
        done
    fi
    if [ "$status" -eq 0 ]; then
        printf '\nscripts/test.sh: all %s steps passed in %ss\n' "${#step_names[@]}" "$SECONDS"
    else
        printf '\nscripts/test.sh: FAILED after %ss\n' "$SECONDS" >&2
    fi
    # The last line: the test counts, in the plain form CI reads.
    if [ -n "$tests_passed" ]; then
        printf 'tests: %s passed, %s failed\n' "$tests_passed" "${tests_failed:-0}"
    fi
}
trap summary EXIT

die() {
    echo "scripts/test.sh: $*" >&2
    exit 1
}

# as_root and apt_install_keeping_services_stopped, shared with bench/compare.sh.
# shellcheck source=scripts/lib.sh
. "$repo/scripts/lib.sh"

install_coturn_tools() {
    local missing=()
    local tool
    for tool in turnutils_stunclient turnutils_uclient turnutils_peer; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "coturn tools present: $(command -v turnutils_stunclient)"
        return
    fi
    echo "missing ${missing[*]}: installing the coturn package"
    apt_install_keeping_services_stopped coturn coturn
    for tool in "${missing[@]}"; do
        command -v "$tool" >/dev/null 2>&1 || die "coturn is installed but $tool is still missing"
    done
}

# The directory holding initdb, as the store tests look for it (tests/pg/mod.rs):
# `pg_config --bindir` if initdb is there, else the newest /usr/lib/postgresql/*/bin.
postgres_bindir() {
    local dir
    dir=$(pg_config --bindir 2>/dev/null || true)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
        echo "$dir"
        return
    fi
    for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
        if [ -x "$dir/initdb" ]; then
            echo "$dir"
            return
        fi
    done
}

install_postgresql() {
    local bindir
    bindir=$(postgres_bindir)
    if [ -z "$bindir" ]; then
        echo "PostgreSQL server binaries (initdb) missing: installing the postgresql package"
        apt_install_keeping_services_stopped postgresql postgresql
        bindir=$(postgres_bindir)
        [ -n "$bindir" ] || die "postgresql is installed but initdb is still missing"
    fi
    echo "PostgreSQL server binaries present: $bindir"
    # initdb refuses to run as root, so as root the tests run the server as the
    # postgres OS user, which the package normally creates.
    if [ "$(id -u)" -eq 0 ] && ! id -u postgres >/dev/null 2>&1; then
        echo "creating the postgres system user (the store tests run PostgreSQL as it)"
        useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
}

# The browser test (tests/browser.rs) drives Debian's headless Chromium with
# playwright-core from npm; it never downloads a browser of its own.
install_browser_test_deps() {
    if [ ! -x /usr/bin/chromium ]; then
        echo "/usr/bin/chromium missing: installing the chromium package"
        # chromium has no service; the helper still keeps any package's service off.
        apt_install_keeping_services_stopped chromium chromium
        [ -x /usr/bin/chromium ] || die "chromium is installed but /usr/bin/chromium is still missing"
    fi
    echo "chromium present: $(/usr/bin/chromium --version 2>/dev/null || echo '(version unknown)')"
    command -v node >/dev/null 2>&1 || die "node is not on PATH: the browser test needs Node.js 20 or later"
    command -v npm >/dev/null 2>&1 || die "npm is not on PATH: the browser test needs it for playwright-core"
    if [ ! -d tests/browser/node_modules/playwright-core ]; then
        echo "tests/browser/node_modules missing: npm ci"
        (cd tests/browser && npm ci --no-audit --no-fund) || die "npm ci in tests/browser failed"
    fi
    echo "playwright-core present: $(node -p "require('./tests/browser/node_modules/playwright-core/package.json').version")"
    # The redirect test runs two nodes and Chromium in a network namespace of its
    # own (`ip netns`, which needs root): iproute2 provides `ip`.
    if ! command -v ip >/dev/null 2>&1; then
        echo "ip missing: installing the iproute2 package"
        apt_install_keeping_services_stopped iproute2 ""
        command -v ip >/dev/null 2>&1 || die "iproute2 is installed but ip is still missing"
    fi
}

# promtool, for tests/monitoring.rs: Debian ships it in the prometheus package,
# whose server must never run here, so it is installed like coturn and postgresql.
install_promtool() {
    if ! command -v promtool >/dev/null 2>&1; then
        echo "promtool missing: installing the prometheus package"
        apt_install_keeping_services_stopped prometheus prometheus
        command -v promtool >/dev/null 2>&1 || die "prometheus is installed but promtool is still missing"
    fi
    echo "promtool present: $(promtool --version 2>/dev/null | head -n 1)"
}

# tests/kubernetes.rs: `kubectl kustomize` renders contrib/kubernetes offline (any
# kubectl from 1.20 on: Debian bookworm's kubernetes-client is 1.20, with kustomize
# v2.0.3, which the kustomizations are written for), and kubernetes-validate checks
# every manifest against the Kubernetes schemas it bundles (no network, no cluster).
# Its dependency PyYAML splits the rendered YAML for the test.
kubernetes_validate_version=1.37.0
install_kubernetes_tools() {
    if ! command -v kubectl >/dev/null 2>&1; then
        echo "kubectl missing: installing the kubernetes-client package"
        # No service in it; the helper keeps any package's service off anyway.
        apt_install_keeping_services_stopped kubernetes-client ""
        command -v kubectl >/dev/null 2>&1 || die "kubernetes-client is installed but kubectl is still missing"
    fi
    echo "kubectl present: $(kubectl version --client 2>/dev/null | head -n 1)"
    if ! command -v kubernetes-validate >/dev/null 2>&1; then
        command -v python3 >/dev/null 2>&1 || die "python3 is not on PATH: tests/kubernetes.rs needs it for kubernetes-validate"
        echo "kubernetes-validate missing: pip install kubernetes-validate==$kubernetes_validate_version"
        python3 -m pip install --quiet --disable-pip-version-check \
            "kubernetes-validate==$kubernetes_validate_version" || die "pip install kubernetes-validate failed"
        # pyenv puts new console scripts on PATH through its shims.
        if command -v pyenv >/dev/null 2>&1; then
            pyenv rehash || true
        fi
        command -v kubernetes-validate >/dev/null 2>&1 ||
            die "kubernetes-validate is installed but not on PATH (pip's scripts directory)"
    fi
    echo "kubernetes-validate present: $(kubernetes-validate --version 2>/dev/null)"
}

# tests/offload.rs rebuilds bpf/channel_offload.o and compares it with the
# committed object: clang and llvm-strip (llvm) build it, libbpf-dev has the
# headers, ethtool sets the test's veth pair up. bpftool is for debugging
# only and not installed.
install_bpf_build_tools() {
    local p
    for p in clang llvm libbpf-dev; do
        if ! dpkg -s "$p" >/dev/null 2>&1; then
            echo "$p missing: installing it (tests/offload.rs rebuilds the BPF object)"
            apt_install_keeping_services_stopped "$p" ""
        fi
    done
    echo "BPF build tools present: $(clang --version | head -n 1)"
    # tests/offload.rs turns checksum offload off on its veth pair, so that
    # the receivers verify the checksums the XDP program writes.
    if ! command -v ethtool >/dev/null 2>&1; then
        apt_install_keeping_services_stopped ethtool ""
    fi
}

install_cargo_fuzz() {
    if cargo fuzz --version >/dev/null 2>&1; then
        echo "cargo-fuzz present: $(cargo fuzz --version)"
        return
    fi
    echo "cargo-fuzz missing: cargo install cargo-fuzz --locked"
    cargo install cargo-fuzz --locked
}

need_cargo_tool() {
    cargo "$1" --version >/dev/null 2>&1 ||
        die "'cargo $1' is not available: install the $2 component of the Rust toolchain"
}

# --- steps ---------------------------------------------------------------------------

step_fmt() {
    need_cargo_tool fmt rustfmt || return
    cargo fmt --all -- --check || return
    cargo fmt --manifest-path fuzz/Cargo.toml -- --check
}

step_clippy() {
    need_cargo_tool clippy clippy || return
    cargo clippy --all-targets -- -D warnings || return
    # The fuzz crate is its own workspace; lint it too (a plain build, no sanitizer).
    CARGO_TARGET_DIR="$fuzz_target_dir" \
        cargo clippy --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings
}

# Counts of the test step, for the closing line.
tests_passed=""
tests_failed=""

step_tests() {
    local log rc=0
    log=$(mktemp)
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace --no-fail-fast 2>&1 | tee "$log" || rc=$?
        # "Summary [ 23.7s] 171 tests run: 171 passed, 0 skipped" (+ ", N failed")
        tests_passed=$(grep -oE '[0-9]+ passed' "$log" | tail -1 | grep -oE '[0-9]+' || true)
        tests_failed=$(grep -E 'tests run:' "$log" | grep -oE '[0-9]+ failed' | tail -1 | grep -oE '[0-9]+' || true)
    else
        echo "(cargo-nextest not installed: using cargo test)"
        cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || rc=$?
        tests_passed=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' | awk '{s+=$1} END {print s+0}' || true)
        tests_failed=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' | awk '{s+=$1} END {print s+0}' || true)
    fi
    rm -f "$log"
    return "$rc"
}

# libFuzzer needs -Zsanitizer=... and friends, which stable rustc accepts only with
# RUSTC_BOOTSTRAP=1: set for the cargo fuzz commands only, never for the others.
cargo_fuzz() {
    env RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$fuzz_target_dir" cargo fuzz "$@"
}

step_fuzz_one() {
    local t=$1
    local log="$fuzz_target_dir/fuzz-$t.log"
    local seeds=()
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t" "$fuzz_target_dir"
    if [ -d "fuzz/seeds/$t" ]; then
        seeds=("fuzz/seeds/$t")
    fi
    if cargo_fuzz run "$t" "fuzz/corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$fuzz_seconds" -timeout=20 >"$log" 2>&1; then
        grep -E '^#[0-9]+[[:space:]]+DONE' "$log" || tail -n 5 "$log"
    else
        tail -n 80 "$log"
        echo "fuzz target $t failed; full log: $log" >&2
        echo "crash input in fuzz/artifacts/$t; fuzz/README.md says how to replay and minimise it" >&2
        return 1
    fi
}

fuzz_target_dir=${FUZZ_TARGET_DIR:-$repo/fuzz/target}

printf '==== setup ====\n'
command -v cargo >/dev/null 2>&1 || die "cargo is not on PATH"
cargo --version
install_coturn_tools
install_postgresql
install_browser_test_deps
install_promtool
install_kubernetes_tools
install_bpf_build_tools
if [ "$run_fuzz" = 1 ]; then
    install_cargo_fuzz
fi

if [ "$quick" = 0 ]; then
    run_step "cargo fmt --check" step_fmt
    run_step "cargo clippy --all-targets -D warnings" step_clippy
fi
run_step "tests (nextest, else cargo test)" step_tests
# nextest does not run doc tests: the crate docs' run-loop example is one.
run_step "doc tests" cargo test --doc
if [ "$run_fuzz" = 1 ]; then
    run_step "fuzz build" cargo_fuzz build
    if [ "${step_results[${#step_results[@]} - 1]}" = ok ]; then
        mapfile -t targets < <(cargo_fuzz list)
        [ "${#targets[@]}" -gt 0 ] || die "cargo fuzz list found no fuzz targets"
        for t in "${targets[@]}"; do
            run_step "fuzz $t (${fuzz_seconds}s)" step_fuzz_one "$t"
        done
    fi
fi

if [ "${#failed[@]}" -gt 0 ]; then
    printf '\nfailed steps:\n' >&2
    printf '  %s\n' "${failed[@]}" >&2
    exit 1
fi
