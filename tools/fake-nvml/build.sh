#!/usr/bin/env bash
# Build the fake NVML test double (fake_nvml.c) as OUT_DIR/libnvidia-ml.so.1.
# Usage: tools/fake-nvml/build.sh OUT_DIR   (CC picks the compiler; default gcc)
# A no-op when the library is newer than its source and this script. Prints its path.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUT_DIR" >&2
    exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
source_file="$here/fake_nvml.c"
out_dir="$1"
library="$out_dir/libnvidia-ml.so.1"
cc="${CC:-gcc}"

if ! command -v "$cc" >/dev/null 2>&1; then
    echo "fake NVML: compiler '$cc' not found (install gcc or set CC)" >&2
    exit 127
fi
mkdir -p "$out_dir"
if [[ -f "$library" && "$library" -nt "$source_file" && "$library" -nt "$0" ]]; then
    echo "$library"
    exit 0
fi
# Compile beside the target, then rename: concurrent builds never see half a library.
partial="$(mktemp "$out_dir/.libnvidia-ml.so.1.XXXXXX")"
trap 'rm -f "$partial"' EXIT
"$cc" -std=c11 -O2 -g -Wall -Wextra -fPIC -shared -fvisibility=hidden \
    -Wl,-soname,libnvidia-ml.so.1 -o "$partial" "$source_file" -pthread
chmod 0755 "$partial"
mv -f "$partial" "$library"
echo "$library"
