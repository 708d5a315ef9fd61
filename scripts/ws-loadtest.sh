#!/usr/bin/env bash
# One run of the issue-15 websocket scenario (BENCHMARKS.md, "Websocket hub
# at 10,000 clients"): a whole `cryptostream run` as the gateway, then
# `cryptostream loadtest ws` against it, then the gateway is stopped.
#
#   scripts/ws-loadtest.sh BINARY PORT_BASE [loadtest flags...] [-- run flags...]
#
# BINARY is a built cryptostream; PORT_BASE picks the gateway's HTTP port
# (PORT_BASE) and NATS port (PORT_BASE+1). Every run gets a fresh data dir.
# WS_PROFILE=DIR writes both processes' CPU profiles there; LOADGEN=BINARY
# runs the load generator from another build (an A/B of gateways with one
# generator).
# Example (the final measurement, 10,000 clients, 30 s window):
#   go build -o /tmp/cs ./cmd/cryptostream
#   scripts/ws-loadtest.sh /tmp/cs 18301 --clients 10000 --slow 1 --warmup 5s --duration 30s
set -euo pipefail
bin=$1 base=$2
shift 2
lt=() run=()
while [ $# -gt 0 ]; do
	if [ "$1" = -- ]; then shift; run=("$@"); break; fi
	lt+=("$1"); shift
done
ulimit -n "$(ulimit -Hn)"
dir=$(mktemp -d /tmp/wslt.XXXXXX)
http=127.0.0.1:$base nats=127.0.0.1:$((base + 1))
prof_run=() prof_lt=()
if [ -n "${WS_PROFILE:-}" ]; then
	mkdir -p "$WS_PROFILE"
	prof_run=(--cpu-profile "$WS_PROFILE/gateway.pprof")
	prof_lt=(--cpu-profile "$WS_PROFILE/loadgen.pprof")
fi
"$bin" run --data-dir "$dir" --http-addr "$http" --nats-listen "$nats" \
	--kraken-ws-url ws://127.0.0.1:1/ws --kraken-rest-url http://127.0.0.1:1 \
	--admin-password admin-password-1 --log-level warn "${prof_run[@]}" "${run[@]}" >"$dir/run.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 600); do
	# Ready once a login answers (readyz can answer before the routes).
	curl -sf -XPOST -H 'Content-Type: application/json' -d '{"username":"admin","password":"admin-password-1"}' \
		"http://$http/auth/login" >/dev/null 2>&1 && [ -f "$dir/nats.nkey" ] && break
	sleep 0.5
done
echo "# $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) bin=$bin loadgen=${LOADGEN:-$bin} ${lt[*]} -- ${run[*]}"
"${LOADGEN:-$bin}" loadtest ws --url "http://$http" --nats-url "nats://$nats" --nats-nkey "$dir/nats.nkey" \
	--password admin-password-1 "${prof_lt[@]}" "${lt[@]}" 2> >(grep -v 'topology differs' >&2)
echo "# end $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
