#!/bin/sh
# The image's entrypoint: `scaler run` with numba's kernels already compiled.
#
# The build compiled every kernel the daemon calls into /opt/spillway/numba-cache, but numba loads a
# cache only from a writable directory, and the root filesystem is read-only: so when
# $NUMBA_CACHE_DIR (on the /tmp emptyDir) is empty, the baked cache is copied there first.
set -eu
baked=/opt/spillway/numba-cache
cache=${NUMBA_CACHE_DIR:-/tmp/numba-cache}
if [ -d "$baked" ] && [ -z "$(ls -A "$cache" 2>/dev/null)" ]; then
  mkdir -p "$cache"
  cp -R "$baked/." "$cache/" || echo "entrypoint: cannot copy $baked to $cache; numba compiles at first use" >&2
fi
exec scaler run "$@"
