#!/bin/sh
# make size: code size of am2z per part, built with -Os, -ffunction-sections
# -fdata-sections and --gc-sections, for x86-64 (cc) and, when its cross compiler is
# installed, 32-bit ARM (arm-linux-gnueabihf-gcc: Thumb-2). Each part is the smallest
# program using it (tests/size/size.c), parts adding up; a size is text + data from
# `size` minus that of a program using nothing of am2z, built the same way: the C
# library, linked dynamically, is not counted. Prints a Markdown table.
set -u
cd "$(dirname "$0")/.." || exit 2
B=build/size
mkdir -p "$B"
FLAGS="-std=c99 -Os -ffunction-sections -fdata-sections -Wl,--gc-sections -Wall -Wextra -Werror"
have() { command -v "$1" >/dev/null 2>&1; }

# compiler prefix ("" = the host's cc), part -> text + data in bytes
measure() {
    cc=${1:-cc}
    out="$B/${1:-host}-$2"
    "$cc" $FLAGS -DAM2Z_SIZE_PART="$2" -o "$out" tests/size/size.c -pthread -lm || return 1
    "${1%gcc}size" "$out" | awk 'NR == 2 { print $1 + $2 }'
}

COLS="cc"
have arm-linux-gnueabihf-gcc && COLS="$COLS arm-linux-gnueabihf-gcc"
for c in $COLS; do
    [ "$c" = cc ] && k="" || k=$c
    base=$(measure "$k" 0) || exit 1
    for p in 1 2 3 4; do
        s=$(measure "$k" $p) || exit 1
        echo "$c $p $((s - base))"
    done
done >"$B/sizes" || exit 1

kib() { awk -v b="$1" 'BEGIN { printf "%.1f KiB", b / 1024 }'; }
row() { # part number, label
    line="| $2 |"
    for c in $COLS; do
        s=$(awk -v c="$c" -v p="$1" '$1 == c && $2 == p { print $3 }' "$B/sizes")
        q=$(awk -v c="$c" -v p="$(($1 - 1))" '$1 == c && $2 == p { print $3 }' "$B/sizes")
        if [ -n "$q" ]; then line="$line $(kib "$s") (+$(kib $((s - q)))) |"
        else line="$line $(kib "$s") |"; fi
    done
    echo "$line"
}
head="| part (each adds to the row above) |"; rule="| --- |"
for c in $COLS; do
    case $c in cc) head="$head x86-64 |";; *) head="$head armhf (Thumb-2) |";; esac
    rule="$rule ---: |"
done
echo "$head"; echo "$rule"
row 1 "values + JSON parse/write"
row 2 "+ local runtime (one processor; brings errors, logging, processors, composition)"
row 3 "+ RESP client (one command)"
row 4 "+ queue runtime (one execute)"
