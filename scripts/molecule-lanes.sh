#!/usr/bin/env bash
# Run Molecule scenarios in parallel lanes (make molecule): each lane runs its scenarios one after
# another, the lanes side by side. Scenarios share nothing but the image (their own containers,
# networks and ephemeral directories), and part of a scenario's time is spent waiting on its
# server, which the other lanes fill.
#   scripts/molecule-lanes.sh <lanes> <scenario>...
# Each line of output carries its scenario's name; the exit status is non-zero when any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
lanes=${1:?usage: molecule-lanes.sh LANES SCENARIO...}; shift
# Longest first (docs/performance.md, "make test"), then any other scenario: longest-first into
# the least loaded lane keeps the lanes even.
order=(cluster rebuild default apache project)
declare -A weight=([cluster]=55 [rebuild]=30 [default]=22 [apache]=21 [project]=9)
scenarios=()
for s in "${order[@]}"; do [[ " $* " == *" $s "* ]] && scenarios+=("$s"); done
for s in "$@"; do [[ " ${order[*]} " == *" $s "* ]] || scenarios+=("$s"); done

declare -a load plan
for ((i = 0; i < lanes; i++)); do load[i]=0; plan[i]=""; done
for s in "${scenarios[@]}"; do
    best=0
    for ((i = 1; i < lanes; i++)); do (( load[i] < load[best] )) && best=$i; done
    load[best]=$(( load[best] + ${weight[$s]:-10} ))
    plan[best]="${plan[best]} $s"
done

results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
run_lane() {
    for s in $1; do
        local started=$SECONDS
        echo "make molecule: scenario $s starts at $(date +%T)"
        if DEBIAN_RELEASE=trixie molecule test -s "$s" 2>&1 | sed -u "s/^/[$s] /"; then
            echo "make molecule: scenario $s passed in $(( (SECONDS - started) / 60 )) min"
        else
            echo "make molecule: scenario $s failed on trixie after $(( (SECONDS - started) / 60 )) min"
            touch "$results/$s.failed"
            return 1
        fi
    done
}
for ((i = 0; i < lanes; i++)); do
    [ -n "${plan[i]}" ] || continue
    echo "make molecule: lane $((i + 1)):${plan[i]}"
    run_lane "${plan[i]}" &
done
wait
failed=$(cd "$results" && ls -- *.failed 2>/dev/null | sed 's/\.failed$//' | tr '\n' ' ')
[ -z "$failed" ] || { echo "make molecule: failed: $failed"; exit 1; }
echo "make molecule: every scenario passed: ${scenarios[*]}"
