#!/bin/sh
# instructions.sh counts the instructions one empty task costs, under
# valgrind --tool=callgrind: the count does not depend on what else the
# machine runs, so it judges a change to the hot path where wall-clock
# figures on a noisy 2-core machine cannot. For each mode of ./instructions
# it counts a run of N tasks and a run of none, one submitter, GOMAXPROCS=1,
# 64 workers and a queue of 1,024, and prints (Ir(N) - Ir(0)) / N, and the
# ratio to the mode's floor (channel for Submit, channel-do for Do).
# Asynchronous preemption is off (GODEBUG=asyncpreemptoff=1): its signals
# crash callgrind now and then, and with one P they only add noise.
#
# Usage, inside benchmarks/:
#
#	./instructions.sh                 every mode, N=100000
#	./instructions.sh bgpool do       only those modes
#	N=20000 ./instructions.sh         fewer tasks
#	PROFILE=1 ./instructions.sh bgpool  also keep callgrind.out.bgpool for
#	                                  callgrind_annotate
#
# It installs valgrind from Debian's packages when the machine has none.
set -eu

cd "$(dirname "$0")"
n=${N:-100000}

if ! command -v valgrind >/dev/null; then
	echo "installing valgrind from Debian's packages" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi

bin=$(mktemp -d)/instructions
trap 'rm -rf "$(dirname "$bin")"' EXIT
CGO_ENABLED=0 go build -o "$bin" ./instructions

modes=${*:-channel bgpool bgpool-timeout channel-do do}

# count MODE TASKS: the instructions of one run
count() {
	out=$(dirname "$bin")/callgrind.out.$1.$2
	GOMAXPROCS=1 GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind --callgrind-out-file="$out" \
		"$bin" -mode "$1" -n "$2" >/dev/null 2>&1
	if [ "${PROFILE:-}" = 1 ] && [ "$2" != 0 ]; then
		cp "$out" "callgrind.out.$1"
	fi
	awk '/^summary:/ {print $2}' "$out"
}

printf '%-16s %12s %8s\n' mode instr/task ratio
for m in $modes; do
	total=$(count "$m" "$n")
	base=$(count "$m" 0)
	per=$(( (total - base) / n ))
	eval "per_$(echo "$m" | tr - _)=$per"
	case $m in
	do | channel-do) floor=${per_channel_do:-} ;;
	*) floor=${per_channel:-} ;;
	esac
	ratio=n/a
	if [ -n "$floor" ] && [ "$floor" -gt 0 ]; then
		ratio=$(awk -v a="$per" -v b="$floor" 'BEGIN { printf "%.2f", a / b }')
	fi
	printf '%-16s %12d %8s\n' "$m" "$per" "$ratio"
done
