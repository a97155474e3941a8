#!/usr/bin/env bash
# Builds the REST gateway into gateway/bin/mintleaf-gateway. Skips the build when the binary is
# newer than every source (Go files, go.mod/go.sum, the embedded OpenAPI document); --force builds
# anyway. Needs Go (>= 1.26, /usr/local/go/bin is tried) and the Go module proxy on a cold cache.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$PATH:/usr/local/go/bin"
gw="$root/gateway"
out="$gw/bin/mintleaf-gateway"

if [[ "${1:-}" != "--force" && -x "$out" ]]; then
  newer="$(find "$gw" -path "$gw/bin" -prune -o -type f \( -name '*.go' -o -name go.mod -o -name go.sum \
    -o -name '*.json' \) -newer "$out" -print -quit)"
  if [[ -z "$newer" ]]; then
    echo "up to date: $out"
    exit 0
  fi
fi
mkdir -p "$gw/bin"
tmp="$out.$$.tmp"  # per-process: concurrent builds (parallel test workers) never share a file
trap 'rm -f "$tmp"' EXIT
(cd "$gw" && go build -trimpath -o "$tmp" ./cmd/gateway)
mv -f "$tmp" "$out"  # atomic: a running gateway or test never sees a half-written binary
echo "built: $out"
