#!/usr/bin/env bash
# Runs the compiled scanner's tests against a build of services/ingest/_scan.c with
# AddressSanitizer and UndefinedBehaviorSanitizer: the C reads untrusted bytes, and a
# memory error there would not show up as a failed assertion. (--capture=sys: a
# sanitizer writes its report to file descriptor 2, which pytest must leave alone.)
set -euo pipefail
cd "$(dirname "$0")/.."

asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
if [[ ! -e "$asan" || ! -e "$ubsan" ]]; then
    echo "check_native: gcc's libasan/libubsan are missing" >&2
    exit 1
fi
python=${PYTHON:-python3}
# Absolute, since the tests run from a copy of the tree (but not resolved: a venv's
# python is a symlink whose location is what makes it the venv's).
case "$python" in */*) python="$(cd "$(dirname "$python")" && pwd)/$(basename "$python")" ;; esac
include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
suffix=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')

# A copy of the tracked tree, so that the sanitized build shadows nothing in this one.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git ls-files -z | tar --null -cf - -T - | tar -xf - -C "$work"
gcc -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
    -g -O1 -std=c11 -Wall -Wextra -Werror -shared -fPIC -I"$include" \
    services/ingest/_scan.c -o "$work/services/ingest/_scan$suffix"

cd "$work"
LD_PRELOAD="$asan:$ubsan" ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 \
    PYTHONPATH="$work" "$python" -m pytest -q -p no:cacheprovider --capture=sys \
    tests/unit/test_native_scan.py tests/unit/test_native_reply.py \
    tests/integration/test_store_paths.py
