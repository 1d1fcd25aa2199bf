#!/bin/sh
# Generates the Python messages and gRPC stubs of meterd's API into clients/python/gen/ (git-ignored),
# with Debian's protoc (protobuf-compiler, 3.15 or later for proto3 `optional`) and grpc_python_plugin
# (protobuf-compiler-grpc). google.rpc.Status comes from the local proto/google/rpc/status.proto.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$here/gen"
plugin=${GRPC_PYTHON_PLUGIN:-$(command -v grpc_python_plugin || true)}
if [ -z "$plugin" ]; then
  echo "grpc_python_plugin not found: apt-get install protobuf-compiler-grpc" >&2
  exit 1
fi
rm -rf "$out"
mkdir -p "$out"
protoc -I "$root/proto" -I "$here/proto" \
  --python_out="$out" --grpc_out="$out" --plugin=protoc-gen-grpc="$plugin" \
  "$root"/proto/meterd/v1/*.proto "$here/proto/google/rpc/status.proto"
