#!/bin/bash
# Starts a real Kubernetes v1.20 control plane on 127.0.0.1 (built by ./build.sh): etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, and a fake node (fake_node.py) that marks pods Running and
# Ready. State goes to $K8S_RUN; prints the kubeconfig path once the API server is ready and the node
# registered. Stop with ./stop.sh "$K8S_RUN".
#
# Ports come from the environment, so that two runs on one machine do not collide (defaults: the
# recipe's): K8S_APISERVER_PORT 16443, K8S_ETCD_PORT 23790, K8S_ETCD_PEER_PORT 23800,
# K8S_ETCD_METRICS_PORT 23810, K8S_KCM_PORT 10357, K8S_SCHEDULER_PORT 10359.
# The fake node reads $K8S_RUN/fake-node-rules.json on every pass (see fake_node.py).
set -euo pipefail
K=${K8S_HOME:-$HOME/.cache/k8s-1.20}; R=${K8S_RUN:-$PWD/k8s-run}; here=$(cd "$(dirname "$0")" && pwd)
API=${K8S_APISERVER_PORT:-16443}; ETCD=${K8S_ETCD_PORT:-23790}; PEER=${K8S_ETCD_PEER_PORT:-23800}
METRICS=${K8S_ETCD_METRICS_PORT:-23810}; KCM=${K8S_KCM_PORT:-10357}; SCHED=${K8S_SCHEDULER_PORT:-10359}
for b in kube-apiserver kube-controller-manager kube-scheduler; do
  [ -x "$K/bin/$b" ] || { echo "start: $K/bin/$b is missing: run $here/build.sh first" >&2; exit 2; }
done
command -v etcd >/dev/null || { echo "start: etcd is missing (apt-get install etcd-server, or run build.sh)" >&2; exit 2; }
mkdir -p "$R/logs"; [ -f "$R/pki/kubeconfig" ] || APISERVER_PORT=$API "$here/pki.sh" "$R" >/dev/null
P=$R/pki; export KUBECONFIG=$P/kubeconfig
rm -rf "$R/etcd-data"
wait_for() {  # wait_for <what> <seconds> <command...>: polls the command, fails with the log's tail
  local what=$1 limit=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      echo "start: $what not ready after ${limit} s; logs in $R/logs" >&2; exit 1
    fi
    sleep 0.3
  done
}
etcd --name test --data-dir "$R/etcd-data" \
  --listen-client-urls http://127.0.0.1:$ETCD --advertise-client-urls http://127.0.0.1:$ETCD \
  --listen-peer-urls http://127.0.0.1:$PEER --initial-advertise-peer-urls http://127.0.0.1:$PEER \
  --initial-cluster test=http://127.0.0.1:$PEER --initial-cluster-state new \
  --listen-metrics-urls http://127.0.0.1:$METRICS > "$R/logs/etcd.log" 2>&1 & echo $! > "$R/etcd.pid"
wait_for etcd 60 sh -c "curl -s http://127.0.0.1:$ETCD/health | grep -q true"
"$K/bin/kube-apiserver" --etcd-servers=http://127.0.0.1:$ETCD \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=$API --insecure-port=0 \
  --tls-cert-file=$P/apiserver.crt --tls-private-key-file=$P/apiserver.key --cert-dir=$R/apiserver-certs \
  --client-ca-file=$P/ca.crt --token-auth-file=$P/tokens.csv --authorization-mode=Node,RBAC \
  --service-account-key-file=$P/sa.pub --service-account-signing-key-file=$P/sa.key \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range=10.96.0.0/24 --allow-privileged=true \
  --enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,ResourceQuota \
  > "$R/logs/apiserver.log" 2>&1 & echo $! > "$R/apiserver.pid"
wait_for kube-apiserver 120 kubectl get --raw /readyz
"$K/bin/kube-controller-manager" --kubeconfig=$KUBECONFIG --authentication-kubeconfig=$KUBECONFIG \
  --authorization-kubeconfig=$KUBECONFIG --bind-address=127.0.0.1 --secure-port=$KCM --port=0 \
  --leader-elect=false --service-account-private-key-file=$P/sa.key --root-ca-file=$P/ca.crt \
  --use-service-account-credentials=true --cluster-signing-cert-file=$P/ca.crt \
  --cluster-signing-key-file=$P/ca.key --service-cluster-ip-range=10.96.0.0/24 --controllers='*' \
  > "$R/logs/kcm.log" 2>&1 & echo $! > "$R/kcm.pid"
"$K/bin/kube-scheduler" --kubeconfig=$KUBECONFIG --authentication-kubeconfig=$KUBECONFIG \
  --authorization-kubeconfig=$KUBECONFIG --bind-address=127.0.0.1 --secure-port=$SCHED --port=0 \
  --leader-elect=false > "$R/logs/sched.log" 2>&1 & echo $! > "$R/sched.pid"
python3 "$here/fake_node.py" --server "https://127.0.0.1:$API" --token "$(cut -d, -f1 "$P/tokens.csv")" \
  --cacert "$P/ca.crt" --nodes 1 --rules "$R/fake-node-rules.json" \
  --seconds "${FAKE_NODE_SECONDS:-14400}" > "$R/logs/fake_node.log" 2>&1 & echo $! > "$R/fake_node.pid"
wait_for "the fake node" 60 sh -c "kubectl get node fake-node-1 -o jsonpath='{.status.conditions[0].status}' | grep -q True"
wait_for "the default service account" 60 kubectl -n default get serviceaccount default
echo "$KUBECONFIG"
