#!/bin/sh
# Runs the example (example/main.go) in GOPATH mode, over the code generate.sh wrote and Debian's Go
# libraries in /usr/share/gocode. Configure it with METERD_GRPC_ADDR, METERD_KEY and METERD_CUSTOMER.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
export GOPATH="$here/.gopath:/usr/share/gocode" GO111MODULE=off GOFLAGS=
[ -n "${GOCACHE:-}" ] || [ -n "${HOME:-}" ] || export GOCACHE="$here/.gopath/cache"
cd "$here"
exec go run ./example "$@"
