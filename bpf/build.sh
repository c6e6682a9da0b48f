#!/usr/bin/env bash
# Builds bpf/channel_offload.o from bpf/channel_offload.c with clang, and writes
# bpf/channel_offload.c.sha256: the SHA-256 of the source the object was built
# from. Both files are committed, so `cargo build` needs neither clang nor a
# nightly toolchain; tests/offload.rs checks that the committed object still
# matches the committed source (by hash, and by rebuilding when clang is here).
#
#   bpf/build.sh              build into bpf/ (commit both files afterwards)
#   bpf/build.sh OUT.o        build into OUT.o only (the test's rebuild)
#
# Needs clang (Debian: clang, 14 or later), llvm-strip (llvm) and the libbpf
# headers (libbpf-dev). The build is reproducible: relative paths, no DWARF
# (only the BTF the loader needs), so the same clang gives the same bytes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
out=${1:-channel_offload.o}
clang=${CLANG:-clang}
strip=${LLVM_STRIP:-llvm-strip}
command -v "$clang" >/dev/null 2>&1 || { echo "bpf/build.sh: $clang not found (apt-get install clang)" >&2; exit 1; }
command -v "$strip" >/dev/null 2>&1 || { echo "bpf/build.sh: $strip not found (apt-get install llvm)" >&2; exit 1; }
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
"$clang" -O2 -g -target bpf -mcpu=v2 \
    -I"/usr/include/$multiarch" \
    -fdebug-prefix-map="$PWD"=. -fno-ident \
    -Wall -Werror \
    -c channel_offload.c -o "$out"
"$strip" -g "$out"
if [ "$#" -eq 0 ]; then
    sha256sum channel_offload.c | cut -d' ' -f1 > channel_offload.c.sha256
    echo "built bpf/channel_offload.o from source $(cat channel_offload.c.sha256)"
fi
