#!/bin/sh
# Every symbol the implementation exports must start with am2z_ (public) or am2z__
# (private, shared between the two headers); an AM2Z_STATIC build exports nothing.
set -u
CC=${1:-cc}
d=$(mktemp -d) || exit 2
trap 'rm -rf "$d"' EXIT
cd "$(dirname "$0")/.." || exit 2
$CC -std=c99 -O2 -I. -c tests/impl.c -o "$d/impl.o" || exit 1
bad=$(nm -g --defined-only "$d/impl.o" | awk '{print $3}' | grep -v '^am2z_' || true)
n=$(nm -g --defined-only "$d/impl.o" | wc -l)
if [ -n "$bad" ]; then echo "symbols without the am2z_ prefix:"; echo "$bad"; exit 1; fi
# A C++ build must export the same C names (no mangled private symbols).
if command -v c++ >/dev/null 2>&1; then
    c++ -std=c++11 -x c++ -O2 -I. -c tests/impl.c -o "$d/impl_cxx.o" || exit 1
    bad=$(nm -g --defined-only "$d/impl_cxx.o" | awk '{print $3}' | grep -v '^am2z_' || true)
    if [ -n "$bad" ]; then echo "C++ build symbols without the am2z_ prefix:"; echo "$bad"; exit 1; fi
fi
printf '#define AM2Z_STATIC\n#include "tests/impl.c"\n' > "$d/static.c"
$CC -std=c99 -O2 -I. -c "$d/static.c" -o "$d/static.o" || exit 1
leaked=$(nm -g --defined-only "$d/static.o" | awk '{print $3}')
if [ -n "$leaked" ]; then echo "AM2Z_STATIC build exports:"; echo "$leaked"; exit 1; fi
echo "symbols ok: $n exported, all prefixed; static build exports none"
