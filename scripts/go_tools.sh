#!/usr/bin/env bash
# Installs the Go code generators (protoc plugins) at pinned versions into .tools/go/bin, so
# `buf generate` for the REST gateway never depends on whatever happens to be in $GOPATH/bin.
# Idempotent: a plugin is (re)installed only when its binary is missing or reports another version.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export GOBIN="$root/.tools/go/bin"
export PATH="/usr/local/go/bin:$PATH"
mkdir -p "$GOBIN"

# name|module path|version — keep in step with gateway/go.mod (docs: /work/shared/TOOLCHAIN.md).
tools=(
  "protoc-gen-go|google.golang.org/protobuf/cmd/protoc-gen-go|v1.36.12"
  "protoc-gen-go-grpc|google.golang.org/grpc/cmd/protoc-gen-go-grpc|v1.6.2"
  "protoc-gen-grpc-gateway|github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway|v2.33.0"
  "protoc-gen-openapiv2|github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2|v2.33.0"
)

for entry in "${tools[@]}"; do
  IFS='|' read -r name pkg version <<<"$entry"
  bin="$GOBIN/$name"
  # `go version -m` reads the module version stamped into the binary: cheap and exact.
  if [[ -x "$bin" ]] && go version -m "$bin" 2>/dev/null | grep -qE "^[[:space:]]+mod[[:space:]].*[[:space:]]$version([[:space:]]|$)"; then
    continue
  fi
  echo "installing $name@$version" >&2
  go install "$pkg@$version"
done
echo "go tools in $GOBIN"
