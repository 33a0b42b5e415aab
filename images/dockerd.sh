#!/usr/bin/env bash
# Make sure a Docker daemon answers; start Debian's dockerd (docker.io) in the background
# if none does. Needs root for that. Log: $DOCKERD_LOG (default /var/log/flywheel-dockerd.log).
set -euo pipefail

if docker info >/dev/null 2>&1; then
    exit 0
fi
if [[ $(id -u) != 0 ]]; then
    echo "no Docker daemon answers and starting one needs root (or: systemctl start docker)" >&2
    exit 1
fi
command -v dockerd >/dev/null || { echo "dockerd missing: apt-get install docker.io" >&2; exit 1; }
LOG="${DOCKERD_LOG:-/var/log/flywheel-dockerd.log}"
echo "starting dockerd (log: $LOG)"
nohup dockerd --storage-driver=overlay2 >>"$LOG" 2>&1 &
for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && { echo "dockerd is up (pid $!)"; exit 0; }
    sleep 0.5
done
echo "dockerd did not answer within 30 s; see $LOG" >&2
exit 1
