#!/bin/sh
# scaling.sh measures how bgpool's cost per task grows with the number of
# goroutines calling Submit at once (BenchmarkSubmitters), and what a Submit
# that waits allocates (BenchmarkBlockedSubmit). It runs both, six times,
# into results/scaling.txt, then prints benchstat's summary of the per-task
# figures (medians, with the spread as ± of the 95% confidence interval;
# "vs base" compares each submitter count with one submitter) and a
# markdown table of medians and ratios per submitter count.
#
# Usage, inside benchmarks/:
#
#	./scaling.sh              run (about 4 minutes on 2 cores) and summarise
#	./scaling.sh FILE         summarise FILE, an earlier run, without running
#
# COUNT (default 6) sets -count. Compare two runs with
#
#	go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da \
#		results/scaling-before.txt results/scaling.txt
set -eu

cd "$(dirname "$0")"

benchstat=golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da

if [ $# -gt 1 ]; then
	echo "usage: $0 [FILE]" >&2
	exit 2
fi
if [ $# -eq 1 ]; then
	out=$1
else
	out=results/scaling.txt
	mkdir -p results
	go test -run '^$' -bench 'Submitters|BlockedSubmit' -count "${COUNT:-6}" >"$out"
fi

echo "## BenchmarkSubmitters ($out)"
echo
go run "$benchstat" -filter '.name:Submitters .unit:(ns/task OR allocs/task)' \
	-row /pool -col /submitters "$out"
echo
echo "## BenchmarkBlockedSubmit ($out)"
echo
go run "$benchstat" -filter '.name:BlockedSubmit .unit:(ns/task OR allocs/task OR B/task)' \
	-row /pool -col /submitters "$out"
echo
echo "## Medians of ns/task, BenchmarkSubmitters ($out)"
echo

# The median ns/task of every pool and submitter count, from lines such as
#	BenchmarkSubmitters/pool=bgpool/submitters=8-2  1  11709905 ns/op ... 117.1 ns/task ...
awk '
function median(key,    n, i, j, v, t) {
	n = split(vals[key], v, " ")
	if (n == 0)
		return ""
	for (i = 2; i <= n; i++)        # insertion sort: a handful of values
		for (j = i; j > 1 && v[j-1] + 0 > v[j] + 0; j--) {
			t = v[j]; v[j] = v[j-1]; v[j-1] = t
		}
	return n % 2 ? v[(n+1)/2] : (v[n/2] + v[n/2+1]) / 2
}
function ratio(a, b) {
	return (a == "" || b == "" || b == 0) ? "n/a" : sprintf("%.2f", a / b)
}
function ns(x) {
	return x == "" ? "n/a" : sprintf("%.0f", x)
}
$1 ~ /^BenchmarkSubmitters\/pool=[^\/]+\/submitters=[0-9]+/ {
	name = $1
	sub(/-[0-9]+$/, "", name)            # the GOMAXPROCS suffix
	split(name, part, "/")
	pool = substr(part[2], length("pool=") + 1)
	subs = substr(part[3], length("submitters=") + 1)
	for (i = 3; i < NF; i++)
		if ($(i+1) == "ns/task")
			vals[pool, subs] = vals[pool, subs] " " $i
	if (!(subs in seen)) {
		seen[subs] = 1
		order[++nsubs] = subs
	}
}
END {
	print "| submitters | bgpool ns/task | channel | ants | bgpool/channel | bgpool/ants | bgpool-timeout-ratelimit/bgpool |"
	print "|--:|--:|--:|--:|--:|--:|--:|"
	for (k = 1; k <= nsubs; k++) {
		s = order[k]
		bg = median("bgpool" SUBSEP s)
		ch = median("channel" SUBSEP s)
		an = median("ants" SUBSEP s)
		tr = median("bgpool-timeout-ratelimit" SUBSEP s)
		printf "| %s | %s | %s | %s | %s | %s | %s |\n", s, ns(bg), ns(ch), ns(an), ratio(bg, ch), ratio(bg, an), ratio(tr, bg)
	}
}
' "$out"
