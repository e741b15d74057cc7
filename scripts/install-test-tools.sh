#!/usr/bin/env bash
# Builds (once per machine) the binaries the e2e tests need: kube-apiserver,
# etcd, helm and kubectl. Everything comes from the Go module proxy; nothing
# else is downloaded.
#
# Cache layout (outside the work tree, keyed by version):
#   ${PRESTOP_TOOLS_CACHE:-$HOME/.cache/prestop-injector}/<tool>-<version>/bin/<tool>
#   .../<tool>-<version>.log      build log
#   .../tools.env                 KUBE_APISERVER=... ETCD=... HELM=... KUBECTL=...
#
# Idempotent and safe to run concurrently (flock). A second run only checks
# that each binary exists and reports the expected version.
#
# Versions can be overridden with KUBE_VERSION, ETCD_VERSION, HELM_VERSION.
# A cold build (empty Go caches, 2 cores) takes about 6 minutes, kube-apiserver
# most of it, and fills about 4.6 GB of Go build (3.4) and module (1.2) cache
# (GOCACHE/GOMODCACHE keep their defaults, outside the work tree). kubectl,
# built after kube-apiserver from the same packages, took 36 s more here.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.5.35}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"

CACHE_DIR="${PRESTOP_TOOLS_CACHE:-$HOME/.cache/prestop-injector}"
ENV_FILE="$CACHE_DIR/tools.env"

log() { printf '[install-test-tools] %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# tool_ok <binary> <expected-substring-of-version-output> <version args...>
tool_ok() {
  local bin="$1" want="$2"
  shift 2
  [[ -x "$bin" ]] || return 1
  local out
  out="$("$bin" "$@" 2>&1)" || return 1
  [[ "$out" == *"$want"* ]]
}

# run_build <tool> <version> <function>: runs the build function with its
# output in the log file, reports failures with the log tail.
run_build() {
  local tool="$1" version="$2" fn="$3"
  local logfile="$CACHE_DIR/$tool-$version.log"
  local start=$SECONDS
  log "building $tool $version (log: $logfile)"
  # Not `if ! (...)`: errexit would be ignored inside the build function.
  local rc=0
  set +e
  (
    set -e
    "$fn"
  ) > "$logfile" 2>&1
  rc=$?
  set -e
  if [[ $rc -ne 0 ]]; then
    log "building $tool $version FAILED; last lines of $logfile:"
    tail -n 40 "$logfile" >&2 || true
    die "building $tool $version failed (full log: $logfile)"
  fi
  log "built $tool $version in $((SECONDS - start))s"
}

new_build_dir() {
  mktemp -d "$CACHE_DIR/.build-$1.XXXXXX"
}

# ---------------------------------------------------------------- etcd
build_etcd() {
  set -euxo pipefail
  local out="$CACHE_DIR/etcd-$ETCD_VERSION/bin"
  # Not `local`: the EXIT trap of this subshell runs after the function returns.
  build_dir="$(new_build_dir etcd)"
  trap 'rm -rf "$build_dir"' EXIT
  local dir="$build_dir"
  mkdir -p "$out"
  cd "$dir"
  go mod init prestop-injector-tools/etcd
  go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  # go.etcd.io/etcd/server/v3 is itself the etcd main package in 3.5.
  go build -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3
  mv -f "$out/etcd.tmp" "$out/etcd"
  "$out/etcd" --version
}

# ------------------------------------------------ kube-apiserver, kubectl
# build_kubernetes_cmd <name>: builds k8s.io/kubernetes/cmd/<name>.
build_kubernetes_cmd() {
  set -euxo pipefail
  local cmd="$1"
  local out="$CACHE_DIR/$cmd-$KUBE_VERSION/bin"
  build_dir="$(new_build_dir "$cmd")"
  trap 'rm -rf "$build_dir"' EXIT
  local dir="$build_dir"
  mkdir -p "$out"

  # k8s.io/kubernetes replaces every staging module with ./staging/...; a
  # wrapper module has to point them at their published v0.Y.Z versions.
  local json kmod
  json="$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION")" || {
    echo "$json"
    echo "go mod download k8s.io/kubernetes@$KUBE_VERSION failed"
    exit 1
  }
  kmod="$(echo "$json" | sed -n 's/^[[:space:]]*"GoMod":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "$kmod" ]] || {
    echo "could not find go.mod of k8s.io/kubernetes@$KUBE_VERSION"
    exit 1
  }

  local go_directive godebug
  go_directive="$(awk '$1 == "go" { print $2; exit }' "$kmod")"
  godebug="$(grep -E '^godebug ' "$kmod" || true)"

  {
    echo "module prestop-injector-tools/kube-apiserver"
    echo
    echo "go $go_directive"
    [[ -z "$godebug" ]] || printf '\n%s\n' "$godebug"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    # Both the `replace ( ... )` block and single-line `replace a => b` forms.
    # Staging modules (local ./staging paths) become the published version;
    # any other non-local replacement is copied as is.
    awk -v sv="$staging_version" '
      /^replace[[:space:]]*\($/ { inblock = 1; next }
      inblock && /^\)/ { inblock = 0; next }
      {
        line = $0
        if (!inblock) {
          if (line !~ /^replace[[:space:]]/) next
          sub(/^replace[[:space:]]+/, "", line)
        }
        n = split(line, f, /[[:space:]]+/)
        # drop empty leading field produced by indentation
        i = 1
        if (f[1] == "") i = 2
        arrow = 0
        for (j = i; j <= n; j++) if (f[j] == "=>") arrow = j
        if (!arrow) next
        target = f[arrow + 1]
        if (target ~ /^\.\/staging\//) {
          printf "\t%s => %s %s\n", f[i], f[i], sv
        } else if (target !~ /^\.\.?\//) {
          sub(/^[[:space:]]+/, "", line)
          printf "\t%s\n", line
        }
      }
    ' "$kmod"
    echo ")"
  } > "$dir/go.mod"
  cat "$dir/go.mod"
  grep -q "k8s.io/apiserver => k8s.io/apiserver $staging_version" "$dir/go.mod" || {
    echo "parsing the replace block of $kmod failed"
    exit 1
  }

  cd "$dir"
  local ld="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$kube_minor"
    ld+=" -X $pkg.gitTreeState=clean"
  done
  go build -trimpath -ldflags "$ld" -o "$out/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
  mv -f "$out/$cmd.tmp" "$out/$cmd"
}

build_kube_apiserver() {
  build_kubernetes_cmd kube-apiserver
  "$CACHE_DIR/kube-apiserver-$KUBE_VERSION/bin/kube-apiserver" --version
}

# The README's install commands use kubectl; the e2e test runs them.
build_kubectl() {
  build_kubernetes_cmd kubectl
  "$CACHE_DIR/kubectl-$KUBE_VERSION/bin/kubectl" version --client
}

# ---------------------------------------------------------------- helm
build_helm() {
  set -euxo pipefail
  local out="$CACHE_DIR/helm-$HELM_VERSION/bin"
  mkdir -p "$out"
  # helm's default Capabilities.KubeVersion follows its client-go version, as
  # in helm's Makefile (client-go v0.Y -> Kubernetes 1.Y).
  local json gomod cg minor
  json="$(cd "$out" && go mod download -json "helm.sh/helm/v3@$HELM_VERSION")" || {
    echo "$json"
    echo "go mod download helm.sh/helm/v3@$HELM_VERSION failed"
    exit 1
  }
  gomod="$(echo "$json" | sed -n 's/^[[:space:]]*"GoMod":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p')"
  cg="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod")"
  minor="$(echo "$cg" | cut -d. -f2)"
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  if [[ -n "$minor" ]]; then
    local p
    for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
      ld+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
    done
  fi
  build_dir="$(new_build_dir helm)"
  trap 'rm -rf "$build_dir"' EXIT
  local gobin="$build_dir"
  # GOFLAGS=-mod=mod is not allowed with `go install pkg@version`.
  GOFLAGS=-buildvcs=false GOBIN="$gobin" go install -trimpath -ldflags "$ld" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv -f "$gobin/helm" "$out/helm"
  "$out/helm" version
}

# The whole run is inside main(), so bash has parsed all of it before it
# starts: editing this file while a build runs cannot break that build.
main() {
  command -v go > /dev/null || die "go is not installed (needed to build the test tools)"
  command -v flock > /dev/null || die "flock is not installed (util-linux)"

  mkdir -p "$CACHE_DIR"

  # One builder at a time; others wait and then find the binaries in place.
  exec 9> "$CACHE_DIR/.lock"
  if ! flock -n 9; then
    log "another install is running; waiting for the lock on $CACHE_DIR/.lock"
    flock 9
  fi

  # Build settings shared by all tools. -mod=mod lets `go build` fill in go.sum
  # for the throw-away wrapper modules.
  export CGO_ENABLED=0
  export GOFLAGS="-mod=mod -buildvcs=false"
  export GO111MODULE=on

  [[ "$KUBE_VERSION" =~ ^v1\.[0-9]+\.[0-9]+$ ]] || die "KUBE_VERSION must look like v1.37.2, not $KUBE_VERSION"
  [[ "$ETCD_VERSION" =~ ^v3\.5\.[0-9]+$ ]] || die "ETCD_VERSION must be a v3.5.x release, not $ETCD_VERSION"
  [[ "$HELM_VERSION" =~ ^v3\.[0-9]+\.[0-9]+$ ]] || die "HELM_VERSION must look like v3.22.0, not $HELM_VERSION"

  kube_minor="$(echo "$KUBE_VERSION" | cut -d. -f2)"
  kube_patch="$(echo "$KUBE_VERSION" | cut -d. -f3)"
  staging_version="v0.${kube_minor}.${kube_patch}"

  KUBE_APISERVER="$CACHE_DIR/kube-apiserver-$KUBE_VERSION/bin/kube-apiserver"
  ETCD="$CACHE_DIR/etcd-$ETCD_VERSION/bin/etcd"
  HELM="$CACHE_DIR/helm-$HELM_VERSION/bin/helm"
  KUBECTL="$CACHE_DIR/kubectl-$KUBE_VERSION/bin/kubectl"

  # etcd first (small, needed by every e2e test), then the long kube-apiserver
  # build, then helm, then kubectl (quick once kube-apiserver's packages are
  # in the Go build cache).
  if tool_ok "$ETCD" "etcd Version: ${ETCD_VERSION#v}" --version; then
    log "etcd $ETCD_VERSION cached"
  else
    run_build etcd "$ETCD_VERSION" build_etcd
    tool_ok "$ETCD" "etcd Version: ${ETCD_VERSION#v}" --version || die "etcd built but --version is wrong"
  fi

  if tool_ok "$KUBE_APISERVER" "Kubernetes $KUBE_VERSION" --version; then
    log "kube-apiserver $KUBE_VERSION cached"
  else
    run_build kube-apiserver "$KUBE_VERSION" build_kube_apiserver
    tool_ok "$KUBE_APISERVER" "Kubernetes $KUBE_VERSION" --version ||
      die "kube-apiserver built but --version does not print $KUBE_VERSION"
  fi

  if tool_ok "$HELM" "Version:\"$HELM_VERSION\"" version; then
    log "helm $HELM_VERSION cached"
  else
    run_build helm "$HELM_VERSION" build_helm
    tool_ok "$HELM" "Version:\"$HELM_VERSION\"" version || die "helm built but 'helm version' is wrong"
  fi

  if tool_ok "$KUBECTL" "Client Version: $KUBE_VERSION" version --client; then
    log "kubectl $KUBE_VERSION cached"
  else
    run_build kubectl "$KUBE_VERSION" build_kubectl
    tool_ok "$KUBECTL" "Client Version: $KUBE_VERSION" version --client ||
      die "kubectl built but 'kubectl version --client' does not print $KUBE_VERSION"
  fi

  tmp_env="$(mktemp "$CACHE_DIR/.tools.env.XXXXXX")"
  {
    echo "KUBE_APISERVER=$KUBE_APISERVER"
    echo "ETCD=$ETCD"
    echo "HELM=$HELM"
    echo "KUBECTL=$KUBECTL"
    echo "KUBE_VERSION=$KUBE_VERSION"
    echo "ETCD_VERSION=$ETCD_VERSION"
    echo "HELM_VERSION=$HELM_VERSION"
  } > "$tmp_env"
  chmod 644 "$tmp_env"
  mv -f "$tmp_env" "$ENV_FILE"

  cat "$ENV_FILE"
}

main "$@"
