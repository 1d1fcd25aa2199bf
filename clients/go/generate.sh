#!/bin/sh
# Generates the Go messages and gRPC stubs of meterd's API into clients/go/.gopath/ (git-ignored), with
# Debian's protoc (protobuf-compiler, 3.15 or later for proto3 `optional`), protoc-gen-go and
# protoc-gen-go-grpc, at the import path of the protos' go_package option. Builds run in GOPATH mode
# against Debian's Go libraries (golang-google-grpc-dev, golang-google-protobuf-dev,
# golang-github-golang-protobuf-1-5-dev): see run.sh.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
gopath="$here/.gopath"
rm -rf "$gopath/src"
mkdir -p "$gopath/src"
protoc -I "$root/proto" \
  --go_out="$gopath/src" --go-grpc_out="$gopath/src" \
  "$root"/proto/meterd/v1/*.proto
