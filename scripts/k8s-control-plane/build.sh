#!/bin/bash
# Vendored from the team's recipe (shared/recipes/k8s-control-plane) so that `make test` can build it
# on a fresh machine; scripts/test.sh calls it once per machine (the result is cached).
# Builds a real Kubernetes v1.20.2 control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler) offline from Debian's *source* package `kubernetes` (vendored dependencies) with
# Debian's Go 1.19. Uses only Debian's archive, through apt, with a private apt config so that the
# system's apt sources stay untouched. Measured here: 5 min 16 s on 2 cores from an empty Go cache,
# peak 1.4 GB per go process; binaries 110 + 104 + 40 MB; Go build cache 1.4 GB.
#   K8S_HOME (default ~/.cache/k8s-1.20) holds the source, the binaries (bin/) and the Go path.
set -euo pipefail
K=${K8S_HOME:-$HOME/.cache/k8s-1.20}
# The stamp names the fix below: binaries built without it (the recipe's) are rebuilt once.
STAMP="$K/bin/.built-with-reflect2-1.0.2"
if [ -x "$K/bin/kube-apiserver" ] && [ -x "$K/bin/kube-controller-manager" ] && [ -x "$K/bin/kube-scheduler" ] \
   && [ -f "$STAMP" ]; then
  echo "already built in $K/bin"; exit 0
fi
# DPkg::Lock::Timeout: wait (up to 10 min) for another apt-get (docker-engine.sh, unattended upgrades)
# instead of failing at once on the dpkg lock.
mkdir -p "$K"/{apt/lists/partial,apt/cache/archives/partial,src,bin,gopath/src/k8s.io}
apt-get -o DPkg::Lock::Timeout=600 update >/dev/null
apt-get -o DPkg::Lock::Timeout=600 install -y golang-go etcd-server openssl golang-github-modern-go-reflect2-dev >/dev/null   # kubectl: the machine's
# a deb-src entry built from the machine's own Debian source list (same mirror, same suites)
src=$(ls /etc/apt/sources.list.d/*.sources | head -1)
uri=$(awk '/^URIs:/{print $2; exit}' "$src"); suites=$(awk '/^Suites:/{$1=""; print; exit}' "$src")
printf 'Types: deb-src\nURIs: %s\nSuites:%s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  "$uri" "$suites" > "$K/apt/src.sources"
APTO="-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=$K/apt -o Dir::State::Lists=$K/apt/lists -o Dir::Cache=$K/apt/cache"
apt-get -o DPkg::Lock::Timeout=600 $APTO update >/dev/null
cd "$K/src"
apt-get -o DPkg::Lock::Timeout=600 $APTO source --download-only kubernetes                # ~34 MB orig.tar.gz incl. vendor/
tree=$(ls -d kubernetes-1.20.*/ 2>/dev/null | head -1 || true); tree=${tree%/}   # none yet: a first build
if [ -z "$tree" ]; then
  tar xzf kubernetes_*.orig.tar.gz && tar xJf kubernetes_*.debian.tar.xz
  tree=$(ls -d kubernetes-1.20.*/ | head -1); tree=${tree%/}
  (cd "$tree" && for p in $(cat ../debian/patches/series); do patch -p1 < ../debian/patches/$p; done)
fi
# The vendored reflect2 v1.0.1 breaks under Go >= 1.18: json-iterator's map encoding faults
# (SIGSEGV in aeshashbody) the first time the API server encodes a custom resource, which kills
# kube-apiserver. Debian's reflect2 1.0.2 (the upstream fix, same API) replaces it.
rm -rf "$tree/vendor/github.com/modern-go/reflect2"
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$tree/vendor/github.com/modern-go/reflect2"
export GOPATH=$K/gopath GO111MODULE=off CGO_ENABLED=0 GOPROXY=off GOFLAGS=
ln -sfn "$K/src/$tree" "$GOPATH/src/k8s.io/kubernetes"
cd "$GOPATH/src/k8s.io/kubernetes"
# The tarball lacks pkg/generated/openapi/zz_generated.openapi.go (kube-apiserver does not compile
# without it: "undefined: openapi.GetOpenAPIDefinitions"); generate it with the vendored openapi-gen.
go build -o "$K/bin/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
LIST=$(find -H . -not \( \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune \) -type f -name '*.go' -print \
   | sed 's|^./staging/src|vendor|; s|^./||' \
   | grep -v -E '^vendor/k8s.io/(code-generator|sample-apiserver)/' \
   | xargs grep -l '+k8s:openapi-gen=' | xargs -n1 dirname | LC_ALL=C sort -u \
   | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
"$K/bin/openapi-gen" --logtostderr -i "$LIST" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
   -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$K/violations.report" 2>/dev/null
LDF="-s -w"   # version stamp, else /version says v0.0.0-master
for V in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  LDF="$LDF -X $V.gitVersion=v1.20.2 -X $V.gitMajor=1 -X $V.gitMinor=20 -X $V.gitTreeState=clean"
done
for c in kube-apiserver kube-controller-manager kube-scheduler; do
  go build -ldflags "$LDF" -o "$K/bin/$c" ./cmd/$c
done
touch "$STAMP"
ls -la "$K/bin"
