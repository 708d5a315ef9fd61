#!/usr/bin/env bash
# Validates the Kubernetes manifests (kustomize output) with kubeconform,
# strict, offline: kubeconform's schemas are otherwise downloaded from the
# internet at every run. The schemas are built once from the OpenAPI
# document of the Kubernetes release below, which the k8s.io/kubernetes Go
# module carries (api/openapi-spec/swagger.json), by deploy/kubeschema, and
# kept in the cache directory; kubeconform is built from its Go module when
# it is not on PATH.
#
#   scripts/kubeconform.sh [KUSTOMIZE_DIR]   (default deploy/k8s)
#
# Exits non-zero when a resource is invalid, or has no schema (an unknown
# kind or apiVersion).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/deploy/k8s}
k8s_version=v1.34.2
kubeconform_mod=github.com/yannh/kubeconform/cmd/kubeconform@v0.7.0
cache=${CRYPTOSTREAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cryptostream}
schemas=$cache/kubeschema/$k8s_version

die() { echo "kubeconform.sh: $*" >&2; exit 1; }

kubeconform=$(command -v kubeconform || true)
if [ -z "$kubeconform" ]; then
  kubeconform=$cache/bin/kubeconform
  if [ ! -x "$kubeconform" ]; then
    echo "kubeconform.sh: building $kubeconform_mod" >&2
    GOBIN=$cache/bin GOTOOLCHAIN=local go install "$kubeconform_mod" || die "go install $kubeconform_mod failed"
  fi
fi

if [ ! -f "$schemas/.complete" ]; then
  echo "kubeconform.sh: building the schemas of Kubernetes $k8s_version" >&2
  spec=$(cd "$root" && GOTOOLCHAIN=local go mod download -json "k8s.io/kubernetes@$k8s_version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')/api/openapi-spec/swagger.json
  [ -f "$spec" ] || die "no OpenAPI document at $spec (go mod download k8s.io/kubernetes@$k8s_version)"
  tmp=$(mktemp -d "$cache/kubeschema.XXXXXX" 2>/dev/null || { mkdir -p "$cache" && mktemp -d "$cache/kubeschema.XXXXXX"; })
  (cd "$root" && go run ./deploy/kubeschema -swagger "$spec" -out "$tmp") || { rm -rf "$tmp"; die "deploy/kubeschema failed"; }
  touch "$tmp/.complete"
  mkdir -p "$(dirname "$schemas")"
  rm -rf "$schemas"
  mv "$tmp" "$schemas"
fi

if command -v kubectl >/dev/null; then
  build=(kubectl kustomize "$dir")
elif command -v kustomize >/dev/null; then
  build=(kustomize build "$dir")
else
  die "neither kubectl nor kustomize is installed"
fi
manifests=$("${build[@]}") || die "${build[*]} failed"
printf '%s\n' "$manifests" | "$kubeconform" -strict -summary \
  -schema-location "$schemas/{{.ResourceKind}}{{.KindSuffix}}.json"
