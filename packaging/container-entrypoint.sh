#!/bin/sh
# The container's entrypoint (see Containerfile): make the twin on first start,
# then run it in the foreground as PID 1's child-free replacement (exec), so
# `podman stop` sends SIGTERM straight to `twin serve` (a clean stop) and
# `podman kill -s HUP` reloads it.
#   TWIN_NAME      the twin's short name (first start only; required then)
#   TWIN_DOMAIN    its mail domain and TLS name (first start only; default NAME.localhost)
#   TWIN_DATA_DIR  where its data lives (default /data, the image's volume)
# Every other TWIN_* variable is a config key (TWIN_SMTP_PORT is smtp.port: `twin config doc`).
set -eu
data="${TWIN_DATA_DIR:-/data}"
if [ ! -f "$data/identity.key" ]; then
    if [ -z "${TWIN_NAME:-}" ]; then
        echo "first start: set TWIN_NAME (and TWIN_DOMAIN) to create the twin in $data" >&2
        exit 64
    fi
    # init prints the owner's login, password and recovery words once: keep them
    twin --data "$data" init --name "$TWIN_NAME" ${TWIN_DOMAIN:+--domain "$TWIN_DOMAIN"}
fi
exec twin --data "$data" serve "$@"
