#!/usr/bin/env bash
# Measures the raw JetStream reference that BENCHMARKS.md compares against:
# nats bench (natscli v0.5.0) against the embedded server exactly as
# `cryptostream run` configures it (file storage under --data-dir), exposed
# with --nats-listen on a free loopback port. Async publish, durable consume
# and ordered consume of 200-byte messages.
#
#   bash scripts/bench-reference.sh [MSGS]
set -euo pipefail
cd "$(dirname "$0")/.."
msgs=${1:-200000}

export PATH="$(go env GOPATH)/bin:$PATH"
if ! nats --version 2>/dev/null | grep -q '^v\?0\.5\.0'; then
  echo "installing natscli v0.5.0" >&2
  go install github.com/nats-io/natscli/nats@v0.5.0
fi

work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/cryptostream" ./cmd/cryptostream
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$work/cryptostream" run --data-dir "$work/data" --http-addr 127.0.0.1:0 \
  --nats-listen "127.0.0.1:$port" --log-format json >"$work/run.log" 2>&1 &
pid=$!
url="nats://127.0.0.1:$port"
# Every listener takes the generated credential only (issue 11 item 1).
key="$work/data/nats.nkey"
for _ in $(seq 100); do
  [ -f "$key" ] && nats --server "$url" --nkey "$key" account info >/dev/null 2>&1 && break
  sleep 0.2
done

common=(--server "$url" --nkey "$key" --no-progress --size 200B --msgs "$msgs")
echo "== async publish (file storage, R1) =="
nats bench js pub async "${common[@]}" --create --storage file --stream benchref --csv "$work/pub.csv" benchref.subject
echo "== durable consume (callback, explicit ack) =="
nats bench js consume "${common[@]}" --stream benchref --csv "$work/consume.csv"
echo "== ordered consume =="
nats bench js ordered "${common[@]}" --stream benchref --csv "$work/ordered.csv"
echo
echo "machine: $(nproc) cores, $(uname -m), $(go version | awk '{print $3}')"
