# Sourced by the build scripts under hack/: what they share around a build cached by key outside
# the checkout. The caller defines complete() (true when every binary is in $bin), then calls
#   begin_build "$cache_root/$key" "$bin"
# which prints $bin and exits when complete() holds, before or after taking the key's lock (two
# callers building one key take turns), and otherwise returns with $staging, a fresh directory
# under the key that is removed on exit, to build into.

begin_build() {
  local dir="$1" bin="$2"
  if complete; then
    echo "$bin"
    exit 0
  fi
  command -v go >/dev/null || { echo "build.sh: Go is required (go 1.26 or newer)" >&2; exit 1; }
  mkdir -p "$dir"
  exec 9>"$dir/.lock"
  flock 9
  if complete; then
    echo "$bin"
    exit 0
  fi
  staging="$(mktemp -d "$dir/.build.XXXXXX")"
  trap 'rm -rf "$staging"' EXIT
}
