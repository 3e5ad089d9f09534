#!/usr/bin/env bash
# Builds the real control-plane binaries (kube-apiserver, kube-controller-manager, kubectl, etcd,
# helm) from the Go module proxy and caches them by the hash of the module files, outside the
# checkout, so a fresh clone on the same machine reuses them and only a machine's first run pays.
#
# Usage: hack/controlplane/build.sh          prints the bin directory on its last line
# Env:   CADENZA_TOOLS_CACHE                 cache root (default ~/.cache/cadenza/controlplane)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${CADENZA_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cadenza/controlplane}"
kube_version="v1.37.2"
# Bump when the build flags below change: the cache key covers this and the module files.
recipe=1

key="$( (echo "$recipe $kube_version"; cat "$here"/*/go.mod "$here"/*/go.sum) | sha256sum | cut -c1-16)"
bin="$cache_root/$key/bin"
tools=(kube-apiserver kube-controller-manager kubectl etcd helm)

complete() {
  for t in "${tools[@]}"; do [ -x "$bin/$t" ] || return 1; done
}

# Two callers building the same key at once (a demo and a test run) take turns.
# shellcheck source=hack/lib/cached_build.sh
. "$here/../lib/cached_build.sh"
begin_build "$cache_root/$key" "$bin"

export CGO_ENABLED=0 GOFLAGS="-trimpath -mod=mod"
timed() {
  local name="$1"; shift
  local start=$SECONDS
  echo "build.sh: building $name ..." >&2
  "$@" >&2
  echo "build.sh: $name built in $((SECONDS - start))s ($(du -m "$staging/$name" | cut -f1) MB)" >&2
}

# The version the binaries report (/version, kubectl version, helm's capability checks).
minor="${kube_version#v1.}"; minor="${minor%%.*}"
version_pkgs=(k8s.io/component-base/version k8s.io/client-go/pkg/version)
ldflags="-s -w"
for p in "${version_pkgs[@]}"; do
  ldflags+=" -X $p.gitVersion=$kube_version -X $p.gitMajor=1 -X $p.gitMinor=$minor"
  ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done

(cd "$here/kube" &&
  timed kube-apiserver go build -ldflags "$ldflags" -o "$staging/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver &&
  timed kube-controller-manager go build -ldflags "$ldflags" -o "$staging/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager &&
  timed kubectl go build -ldflags "$ldflags" -o "$staging/kubectl" k8s.io/kubernetes/cmd/kubectl)
(cd "$here/etcd" && timed etcd go build -ldflags "-s -w" -o "$staging/etcd" go.etcd.io/etcd/server/v3)
(cd "$here/helm" && timed helm go build -ldflags "-s -w" -o "$staging/helm" helm.sh/helm/v3/cmd/helm)

mkdir -p "$bin"
for t in "${tools[@]}"; do mv "$staging/$t" "$bin/$t"; done
echo "$bin"
