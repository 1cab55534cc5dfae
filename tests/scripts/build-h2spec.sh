#!/usr/bin/env bash
# Builds h2spec (HTTP/2 conformance, 146 cases) for `make conformance`. h2spec is on no package
# registry these machines reach, and Go's module proxy is not reachable either, so it is built
# from a git checkout of github.com/summerwind/h2spec (a clone, or a fetched snapshot's git
# directory) with Debian's Go in GOPATH mode against Debian's packaged Go libraries.
# usage: tests/scripts/build-h2spec.sh H2SPEC_GIT_DIR OUT
set -eu
src=${1:?usage: build-h2spec.sh H2SPEC_GIT_DIR OUT}
out=${2:?usage: build-h2spec.sh H2SPEC_GIT_DIR OUT}
packages="golang-go golang-github-spf13-cobra-dev golang-github-fatih-color-dev golang-golang-x-net-dev"
missing=""
for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
gopath=$(mktemp -d)
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src/github.com/summerwind"
git clone -q "$src" "$gopath/src/github.com/summerwind/h2spec"
mkdir -p "$(dirname "$out")"
(cd "$gopath/src/github.com/summerwind/h2spec" &&
    GOPATH="$gopath:/usr/share/gocode" GO111MODULE=off go build -o "$out" ./cmd/h2spec)
echo "built $out"
