#!/bin/sh
# Interleaved A/B of two builds of bench/queue.c (`queue --quick`): A B A B A B, then the
# median of each figure and B/A. The load average is printed with every run: on a shared
# machine compare only same-run ratios.
# Usage: sh bench/ab.sh A_BINARY B_BINARY [ROUNDS]   (from the repository root)
a=$1; b=$2; rounds=${3:-3}; out=$(mktemp)
i=0
while [ $i -lt "$rounds" ]; do
    for x in A B; do
        if [ $x = A ]; then bin=$a; else bin=$b; fi
        line=$($bin --quick) || { echo "ab: $bin failed" >&2; exit 1; }
        echo "$x $line" | tee -a "$out"
    done
    i=$((i + 1))
done
awk '{ for (f = 2; f < NF; f += 2) { v[$1, $f, ++n[$1, $f]] = $(f + 1); if (!(f in name)) { name[f] = $f; nn++ } } }
     function med(x, k,   m, i, j, t, a) { m = n[x, k]; for (i = 1; i <= m; i++) a[i] = v[x, k, i] + 0
         for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
         return a[int((m + 1) / 2)] }
     END { printf "%-8s %12s %12s %8s\n", "median", "A", "B", "B/A"
           for (i = 1; i <= nn; i++) { k = name[2 * i]; ma = med("A", k); mb = med("B", k)
               printf "%-8s %12s %12s %8.2f\n", k, ma, mb, (ma > 0 ? mb / ma : 0) } }' "$out"
rm -f "$out"
