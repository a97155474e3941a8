#!/usr/bin/env bash
# Regenerates the Go side of the contract from proto/ (buf.gen.go.yaml): gateway/gen (Go messages,
# gRPC clients, grpc-gateway handlers) and gateway/openapi/mintleaf.swagger.json. With --check,
# generates into a scratch copy and fails if the committed files differ (CI runs this so nobody
# edits generated code by hand). Plugins come pinned from scripts/go_tools.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/go_tools.sh" >/dev/null
export PATH="$root/.tools/go/bin:$root/node_modules/.bin:/usr/local/go/bin:$PATH"
command -v buf >/dev/null || { echo "buf not found: run 'make setup' (npm ci)" >&2; exit 1; }

generated=(gateway/gen gateway/openapi/mintleaf.swagger.json)

generate() {  # $1 = tree to generate into (a scratch copy of the inputs, or the repo)
  local dir="$1"
  rm -rf "$dir/gateway/gen" "$dir/gateway/openapi/mintleaf.swagger.json"
  mkdir -p "$dir/gateway/gen" "$dir/gateway/openapi"
  (cd "$dir" && buf generate --template buf.gen.go.yaml)
}

if [[ "${1:-}" == "--check" ]]; then
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  cp -r "$root/proto" "$root/third_party" "$root/buf.yaml" "$root/buf.gen.go.yaml" "$scratch/"
  generate "$scratch"
  status=0
  for p in "${generated[@]}"; do
    diff -r "$root/$p" "$scratch/$p" >"$scratch/diff.txt" 2>&1 || {
      echo "generated code in $p is stale: run 'make gen' and commit the result" >&2
      head -40 "$scratch/diff.txt" >&2
      status=1
    }
  done
  exit $status
fi
generate "$root"
echo "generated: ${generated[*]}"
