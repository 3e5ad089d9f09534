#!/usr/bin/env bash
# Builds promtool (Prometheus's rule checker and rule unit-test runner) from the Go module proxy
# for the alert-rule tests, and caches it by the hash of the module files outside the checkout,
# the way hack/controlplane/build.sh caches the control plane: only a machine's first run pays.
#
# Usage: hack/promtool/build.sh              prints the bin directory on its last line
# Env:   CADENZA_PROMTOOL_CACHE              cache root (default ~/.cache/cadenza/promtool)
#        GOFLAGS, GOPROXY                    taken from the environment, as for any go build
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${CADENZA_PROMTOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cadenza/promtool}"
# The Prometheus release go.mod pins, as its module version and as the release it reports
# (module v0.3MM.P is release 3.MM.P); change both with `go get -tool <module>@<version>`.
module_version="v0.316.0"
prometheus_version="3.16.0"
# Bump when the build flags below change: the cache key covers this and the module files.
recipe=1

grep -q "github.com/prometheus/prometheus $module_version" "$here/go.mod" ||
  { echo "build.sh: go.mod does not pin Prometheus $module_version" >&2; exit 1; }
key="$( (echo "$recipe $prometheus_version"; cat "$here/go.mod" "$here/go.sum") | sha256sum | cut -c1-16)"
bin="$cache_root/$key/bin"

complete() { [ -x "$bin/promtool" ]; }
# shellcheck source=hack/lib/cached_build.sh
. "$here/../lib/cached_build.sh"
begin_build "$cache_root/$key" "$bin"

start=$SECONDS
echo "build.sh: building promtool ..." >&2
# Keep the caller's GOFLAGS (a proxy or a vendor setting) and add what this build needs.
(cd "$here" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath -mod=mod" \
  go build -ldflags "-s -w -X github.com/prometheus/common/version.Version=$prometheus_version" \
  -o "$staging/promtool" github.com/prometheus/prometheus/cmd/promtool) >&2
echo "build.sh: promtool built in $((SECONDS - start))s ($(du -m "$staging/promtool" | cut -f1) MB)" >&2

mkdir -p "$bin"
mv "$staging/promtool" "$bin/promtool"
echo "$bin"
