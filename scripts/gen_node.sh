#!/usr/bin/env bash
# Regenerates the Node SDK's code (sdk_node/src/gen) from proto/ with protoc-gen-es (buf.gen.node.yaml).
# With --check, generates into a scratch copy and fails if the committed generated code differs.
# Needs `npm ci` in sdk_node (the plugin) and at the root (buf).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$root/node_modules/.bin:$PATH"
out=sdk_node/src/gen

if [[ ! -x "$root/sdk_node/node_modules/.bin/protoc-gen-es" ]]; then
  echo "protoc-gen-es is missing: run 'npm ci' in sdk_node (make setup)" >&2
  exit 1
fi

generate() {  # $1 = tree to generate into (a scratch copy of the inputs, or the repo)
  local dir="$1"
  rm -rf "${dir:?}/$out"
  (cd "$dir" && buf generate --template buf.gen.node.yaml)
}

if [[ "${1:-}" == "--check" ]]; then
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  mkdir -p "$scratch/sdk_node/node_modules"
  cp -r "$root/proto" "$root/third_party" "$root/buf.yaml" "$root/buf.gen.node.yaml" "$scratch/"
  # The plugin runs from the repo's install (a symlink: node_modules is large).
  ln -s "$root/sdk_node/node_modules/.bin" "$scratch/sdk_node/node_modules/.bin"
  generate "$scratch"
  if ! diff -r "$root/$out" "$scratch/$out" > "$scratch/diff.txt"; then
    echo "generated code in $out is stale: run 'make gen' and commit the result" >&2
    head -40 "$scratch/diff.txt" >&2
    exit 1
  fi
  exit 0
fi
generate "$root"
echo "generated: $out"
