#!/usr/bin/env bash
# One run of the issue-15 REST scenario (BENCHMARKS.md, "`asset_latest`"):
# a whole `cryptostream run` as the gateway with 500 real candles imported,
# `wrk` with 64 keep-alive connections and a valid token against
# GET /crypto/asset_latest/BTC-USD, and in the same minute the same wrk
# against the bare net/http reference (scripts/resthello); then both stop.
#
#   scripts/rest-loadtest.sh BINARY PORT_BASE [ROUNDS]
#
# BINARY is a built cryptostream; PORT_BASE picks the gateway's HTTP port
# (PORT_BASE), its NATS port (PORT_BASE+1) and the reference's (PORT_BASE+2).
# Each round prints the reference's wrk summary, then the gateway's; then
# the same pair open loop at REST_RATE requests/s (default 20000) over the
# same 64 connections, latency from each request's due time
# (`cryptostream loadtest rest --rate`, built from this tree, so that every
# BINARY is measured by the same generator). REST_RATE=0 leaves it out.
set -euo pipefail
bin=$1 base=$2 rounds=${3:-1} rate=${REST_RATE:-20000}
here=$(cd "$(dirname "$0")" && pwd)
shared=${CRYPTOSTREAM_SHARED:-$here/../../shared}
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null 2>&1 || { echo "wrk is missing (apt-get install wrk)" >&2; exit 2; }; }
dir=$(mktemp -d /tmp/restlt.XXXXXX)
http=127.0.0.1:$base nats=127.0.0.1:$((base + 1)) ref=127.0.0.1:$((base + 2))
(cd "$here/.." && go build -o "$dir/resthello" ./scripts/resthello && go build -o "$dir/loadgen" ./cmd/cryptostream)
"$bin" run --data-dir "$dir/data" --http-addr "$http" --nats-listen "$nats" \
	--kraken-ws-url ws://127.0.0.1:1/ws --kraken-rest-url http://127.0.0.1:1 \
	--admin-password admin-password-1 --log-level warn >"$dir/run.log" 2>&1 &
pid=$!
"$dir/resthello" "$ref" &
refpid=$!
trap 'kill $pid $refpid 2>/dev/null || true; wait $pid $refpid 2>/dev/null || true; rm -rf "$dir"' EXIT
login() {
	curl -sf -XPOST -H 'Content-Type: application/json' -d '{"username":"admin","password":"admin-password-1"}' "http://$http/auth/login"
}
for _ in $(seq 600); do
	# Ready once a login answers (readyz can answer before the routes).
	login >/dev/null 2>&1 && [ -f "$dir/data/nats.nkey" ] && break
	sleep 0.5
done
head -501 "$shared/data/kraken_BTCUSD_1m_2023-03.csv" >"$dir/btc500.csv"
"$bin" import --nats-url "nats://$nats" --nats-nkey "$dir/data/nats.nkey" "$dir/btc500.csv" >/dev/null 2>&1
tok=$(login | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
for _ in $(seq 100); do
	curl -sf -H "Authorization: Bearer $tok" "http://$http/crypto/asset_latest/BTC-USD" >/dev/null && break
	sleep 0.2
done
curl -sf -H "Authorization: Bearer $tok" "http://$http/crypto/asset_latest/BTC-USD" >/dev/null || { echo "asset_latest does not answer; run log:" >&2; tail -20 "$dir/run.log" >&2; exit 1; }
for r in $(seq "$rounds"); do
	echo "# round $r $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) reference"
	wrk -t2 -c64 -d10s --latency "http://$ref/" | grep -E 'Requests/sec|^ +(50|99)%'
	echo "# round $r $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) gateway bin=$bin"
	wrk -t2 -c64 -d10s --latency -H "Authorization: Bearer $tok" "http://$http/crypto/asset_latest/BTC-USD" | grep -E 'Requests/sec|^ +(50|99)%|Non-2xx'
	[ "$rate" = 0 ] && continue  # no open loop asked for
	echo "# round $r $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) reference open loop"
	"$dir/loadgen" loadtest rest --url "http://$ref" --token unused --path / --concurrency 64 --rate "$rate" --warmup 2s --duration 10s | tail -1
	echo "# round $r $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) gateway open loop bin=$bin"
	"$dir/loadgen" loadtest rest --url "http://$http" --token "$tok" --concurrency 64 --rate "$rate" --warmup 2s --duration 10s | tail -1
done
