#!/bin/sh
# Install the benchmarks' load generator (wrk) when it is missing. Root, or sudo, needed.
set -e
if command -v wrk >/dev/null 2>&1; then
    echo "wrk: $(command -v wrk)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    SUDO="sudo"
fi
if ! $SUDO apt-get install -y wrk; then
    $SUDO apt-get update
    $SUDO apt-get install -y wrk
fi
command -v wrk
