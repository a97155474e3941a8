#!/usr/bin/env bash
# Regenerates all code from proto/. With --check, generates into a scratch copy and fails if the
# committed generated code differs (CI runs this so nobody edits generated code by hand).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VENV:-$root/.venv}"
export PATH="$venv/bin:$root/bin:$root/node_modules/.bin:$PATH"

generate() {  # $1 = tree to generate into (a copy of the repo's relevant parts, or the repo)
  local dir="$1"
  rm -rf "$dir/server/mintleaf_server/_proto" "$dir/sdk_python/mintleaf/_gen"
  (cd "$dir" && buf generate)
  python "$root/scripts/fix_proto_imports.py" "$dir/server/mintleaf_server/_proto"
  touch "$dir/sdk_python/mintleaf/_gen/py.typed"
}

if [[ "${1:-}" == "--check" ]]; then
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  mkdir -p "$scratch/server/mintleaf_server" "$scratch/sdk_python/mintleaf"
  cp -r "$root/proto" "$root/third_party" "$root/bin" "$root/buf.yaml" "$root/buf.gen.yaml" "$root/pyproject.toml" "$scratch/"
  generate "$scratch"
  status=0
  for d in server/mintleaf_server/_proto sdk_python/mintleaf/_gen; do
    diff -r -x __pycache__ "$root/$d" "$scratch/$d" > "$scratch/diff.txt" || {
      echo "generated code in $d is stale: run 'make gen' and commit the result" >&2
      head -40 "$scratch/diff.txt" >&2
      status=1
    }
  done
  exit $status
fi
generate "$root"
echo "generated: server/mintleaf_server/_proto sdk_python/mintleaf/_gen"
