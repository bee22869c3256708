#!/bin/bash
# Stops what ./start.sh started in $1 (default $K8S_RUN): the fake node and the control plane, then
# etcd; waits for each to exit (SIGKILL after 10 s). Idempotent.
set -uo pipefail
R=${1:-${K8S_RUN:-$PWD/k8s-run}}
for c in fake_node sched kcm apiserver etcd; do
  f="$R/$c.pid"; [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$f"
done
