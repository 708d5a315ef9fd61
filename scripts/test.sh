#!/usr/bin/env bash
# The whole test suite, as README.md gives it and .ci/run runs it. On a fresh
# Debian machine with Go it installs and starts what the tests need, and it
# fails loudly when something cannot be had: no test passes by skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

# --stress runs the same suite beside `stress-ng --cpu 4`, the busy 2-core
# machine the tests promise to pass on (issue 11, item 13).
stress=""
for arg in "$@"; do
  case "$arg" in
    --stress) stress=1 ;;
    *) printf 'usage: %s [--stress]\n' "$0" >&2; exit 2 ;;
  esac
done

say() { printf '\n== %s\n' "$*" >&2; }
die() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    $SUDO apt-get update -qq || die "apt-get update failed"
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
}

command -v go >/dev/null || die "Go is required (https://go.dev/doc/install)"
[ -d ../shared/data ] || [ -n "${CRYPTOSTREAM_SHARED:-}" ] || die "../shared/data (the recorded market data) must sit beside the repository, or set CRYPTOSTREAM_SHARED"

# PostgreSQL: the one on 127.0.0.1:5432 when it answers; otherwise install and
# start one. The server binaries are needed either way: a test stops and
# restarts a private instance of its own to prove the sink survives an outage.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
  say "installing PostgreSQL"
  apt_install postgresql postgresql-client
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  say "starting PostgreSQL"
  version=$(basename "$(dirname "$pg_bin")")
  if ! ls /etc/postgresql/"$version"/main >/dev/null 2>&1; then
    $SUDO pg_createcluster "$version" main >/dev/null
  fi
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || die "PostgreSQL did not start"
  for _ in $(seq 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
  pg_isready -q -h 127.0.0.1 -p 5432 || die "PostgreSQL does not answer on 127.0.0.1:5432"
fi
export CRYPTOSTREAM_TEST_DATABASE_URL=${CRYPTOSTREAM_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
if ! psql "$CRYPTOSTREAM_TEST_DATABASE_URL" -qAtc 'select 1' >/dev/null 2>&1; then
  # A stock Debian cluster asks for a password over TCP: give the tests one.
  say "setting a password for the postgres role"
  as_postgres psql -qc "ALTER USER postgres PASSWORD 'postgres'" || die "cannot reach PostgreSQL as postgres"
  export CRYPTOSTREAM_TEST_DATABASE_URL="postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable"
  psql "$CRYPTOSTREAM_TEST_DATABASE_URL" -qAtc 'select 1' >/dev/null || die "PostgreSQL refuses the test connection"
fi
export CRYPTOSTREAM_PG_BIN="$pg_bin"

# The dashboard's browser test drives Debian's Chromium; it fails, never
# skips, without one.
if [ ! -x /usr/bin/chromium ]; then
  say "installing Chromium"
  apt_install chromium
fi
# The built dashboard (gateway/web/dist) is committed so that the Go build
# needs no Node; with Node, check that it matches its sources.
if ! command -v npm >/dev/null; then
  say "installing Node.js and npm"
  apt_install nodejs npm
fi
say "dashboard assets current"
(cd gateway/web && npm ci --no-audit --no-fund --loglevel=error >/dev/null && node build.mjs --check) || die "gateway/web/dist does not match its sources: (cd gateway/web && npm ci && npm run build)"

# The deploy files' checkers (deploy/tools_test.go): promtool, caddy and
# docker compose, which fail rather than skip once this script has set
# CRYPTOSTREAM_DEPLOY_TOOLS. Debian's docker-compose is the old Python one, so
# compose v2 is built from its Go module (a few minutes, once).
command -v promtool >/dev/null || { say "installing promtool"; apt_install prometheus; }
command -v caddy >/dev/null || { say "installing caddy"; apt_install caddy; }
# kustomize builds deploy/k8s for TestKustomizeBuild and TestKubeconform:
# kubectl's when there is one, else kustomize built from its Go module
# (Debian's kubernetes-client is 1.20, too old for the manifests).
if ! command -v kubectl >/dev/null && ! command -v kustomize >/dev/null; then
  say "building kustomize"
  GOBIN="${GOBIN:-$(go env GOPATH)/bin}" GOTOOLCHAIN=local go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1 || die "go install kustomize failed"
  export PATH="$PATH:${GOBIN:-$(go env GOPATH)/bin}"
fi
if ! command -v docker-compose >/dev/null || ! docker-compose version 2>/dev/null | grep -q '^Docker Compose version'; then
  say "building docker compose v2"
  compose_mod=github.com/docker/compose/v2@v2.40.3
  compose_dir=$(GOTOOLCHAIN=local go mod download -json "$compose_mod" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$compose_dir" ] || die "go mod download $compose_mod failed"
  compose_src=$(mktemp -d)
  cp -r "$compose_dir"/. "$compose_src" && chmod -R u+w "$compose_src"
  (cd "$compose_src" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -o /usr/local/bin/docker-compose ./cmd) || die "building docker compose failed"
  rm -rf "$compose_src"
fi
export CRYPTOSTREAM_DEPLOY_TOOLS=1

say "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './node_modules/*'))
[ -z "$unformatted" ] || die "gofmt would change: $unformatted"

say "go vet"
go vet ./...

if [ -n "$stress" ]; then
  command -v stress-ng >/dev/null || { say "installing stress-ng"; apt_install stress-ng; }
  say "stress-ng --cpu 4 beside the tests"
  stress-ng --cpu 4 --timeout 40m >/dev/null 2>&1 &
  stress_pid=$!
  trap 'kill "$stress_pid" 2>/dev/null || true' EXIT
fi

say "go test -race"
go test -race -timeout 20m -count=1 ./... || die "go test failed"
