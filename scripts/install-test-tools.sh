#!/usr/bin/env bash
# Builds (once per machine) the binaries the e2e tests need: kube-apiserver,
# etcd, helm and kubectl (and the node's components, and promql-check for the
# chart's alerts). Everything comes from the Go module proxy; nothing else is
# downloaded.
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
# The version-skew tests: an older control plane, and a kubelet three
# minors older still. The module proxy serves only some staging modules at
# v0.31.14; these are the nearest it has (probed with go mod download).
KUBE_SKEW_VERSION="${KUBE_SKEW_VERSION:-v1.31.14}"
KUBE_SKEW_OVERRIDES="${KUBE_SKEW_OVERRIDES-k8s.io/kube-scheduler=v0.31.13 k8s.io/kube-controller-manager=v0.31.13 k8s.io/endpointslice=v0.31.13 k8s.io/kube-proxy=v0.31.11}"
KUBELET_OLDEST_VERSION="${KUBELET_OLDEST_VERSION:-v1.29.15}"
KUBELET_OLDEST_OVERRIDES="${KUBELET_OLDEST_OVERRIDES-}"
ETCD_VERSION="${ETCD_VERSION:-v3.5.35}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
# The Go module of Prometheus 3.16, whose rule-file parser checks the
# chart's alerts (promql-check below).
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"

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

# ------------------------------------------------------- Kubernetes
# build_kubernetes <version> <out-dir> <overrides> <cmd>...: builds the
# commands k8s.io/kubernetes/cmd/<cmd> at <version> in one `go build`, so
# they share the compile work. <overrides> is a space-separated list of
# module=version for staging modules the proxy does not serve at v0.Y.Z.
build_kubernetes() {
  set -euxo pipefail
  local version="$1" out="$2" overrides="$3"
  shift 3
  local minor patch staging
  minor="$(echo "$version" | cut -d. -f2)"
  patch="$(echo "$version" | cut -d. -f3)"
  staging="v0.${minor}.${patch}"
  build_dir="$(new_build_dir "kubernetes-$version")"
  trap 'rm -rf "$build_dir"' EXIT
  local dir="$build_dir"
  mkdir -p "$out"

  # k8s.io/kubernetes replaces every staging module with ./staging/...; a
  # wrapper module has to point them at their published v0.Y.Z versions.
  local json kmod
  json="$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$version")" || {
    echo "$json"
    echo "go mod download k8s.io/kubernetes@$version failed"
    exit 1
  }
  kmod="$(echo "$json" | sed -n 's/^[[:space:]]*"GoMod":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "$kmod" ]] || {
    echo "could not find go.mod of k8s.io/kubernetes@$version"
    exit 1
  }

  local go_directive godebug
  go_directive="$(awk '$1 == "go" { print $2; exit }' "$kmod")"
  godebug="$(grep -E '^godebug ' "$kmod" || true)"

  {
    echo "module prestop-injector-tools/kubernetes"
    echo
    echo "go $go_directive"
    [[ -z "$godebug" ]] || printf '\n%s\n' "$godebug"
    echo
    echo "require k8s.io/kubernetes $version"
    echo
    echo "replace ("
    # Both the `replace ( ... )` block and single-line `replace a => b` forms.
    # Staging modules (local ./staging paths) become the published version,
    # or the override given for that module; any other non-local
    # replacement is copied as is.
    awk -v sv="$staging" -v ov="$overrides" '
      BEGIN {
        n = split(ov, pairs, " ")
        for (k = 1; k <= n; k++) {
          split(pairs[k], kv, "=")
          if (kv[1] != "") override[kv[1]] = kv[2]
        }
      }
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
          v = (f[i] in override) ? override[f[i]] : sv
          printf "\t%s => %s %s\n", f[i], f[i], v
        } else if (target !~ /^\.\.?\//) {
          sub(/^[[:space:]]+/, "", line)
          printf "\t%s\n", line
        }
      }
    ' "$kmod"
    echo ")"
  } > "$dir/go.mod"
  cat "$dir/go.mod"
  grep -q "k8s.io/apiserver => k8s.io/apiserver v0\.$minor\." "$dir/go.mod" || {
    echo "parsing the replace block of $kmod failed"
    exit 1
  }

  cd "$dir"
  local ld="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean"
  done
  local pkgs=() cmd
  for cmd in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$cmd"); done
  mkdir -p "$dir/bin"
  go build -trimpath -ldflags "$ld" -o "$dir/bin/" "${pkgs[@]}"
  for cmd in "$@"; do mv -f "$dir/bin/$cmd" "$out/$cmd"; done
}

# kube_ok <binary>: the binary prints the version it was built for.
kube_ok() {
  local bin="$1" version="$2"
  if [[ "$(basename "$bin")" == kubectl ]]; then
    tool_ok "$bin" "Client Version: $version" version --client
  else
    tool_ok "$bin" "Kubernetes $version" --version
  fi
}

# ensure_kubernetes <version> <overrides> <cmd>...: builds whichever of the
# commands is not cached yet, all in one go build.
ensure_kubernetes() {
  local version="$1" overrides="$2"
  shift 2
  [[ "$version" =~ ^v1\.[0-9]+\.[0-9]+$ ]] || die "Kubernetes versions look like v1.37.2, not $version"
  local out="$CACHE_DIR/kubernetes-$version/bin" missing=() cmd
  for cmd in "$@"; do
    kube_ok "$out/$cmd" "$version" || missing+=("$cmd")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "Kubernetes $version cached: $*"
    return
  fi
  # shellcheck disable=SC2317 # called through run_build
  build_this() { build_kubernetes "$version" "$out" "$overrides" "${missing[@]}"; }
  run_build "kubernetes" "$version" build_this
  for cmd in "${missing[@]}"; do
    kube_ok "$out/$cmd" "$version" || die "$cmd built but does not report $version"
  done
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

# ---------------------------------------------------------- promql-check
# A small program of this project on Prometheus's own rule-file parser: it
# checks rule files as Prometheus loads them (YAML, names, durations, PromQL,
# annotation templates) and prints each rule's series selectors as JSON. A
# new revision of the program below needs a new PROMQL_CHECK_REVISION.
PROMQL_CHECK_REVISION=r1
build_promql_check() {
  set -euxo pipefail
  local out="$CACHE_DIR/promql-check-$PROMETHEUS_VERSION-$PROMQL_CHECK_REVISION/bin"
  build_dir="$(new_build_dir promql-check)"
  trap 'rm -rf "$build_dir"' EXIT
  mkdir -p "$out"
  cd "$build_dir"
  printf 'module prestop-injector-tools/promql-check\n\ngo 1.24\n\nrequire github.com/prometheus/prometheus %s\n' \
    "$PROMETHEUS_VERSION" > go.mod
  cat > main.go <<'GO'
package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// Set at build time: the revision of this program and the Prometheus module.
var version = "unknown"

type matcher struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Value string `json:"value"`
}

type rule struct {
	Group     string      `json:"group"`
	Name      string      `json:"name"`
	Selectors [][]matcher `json:"selectors"`
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "--version" {
		fmt.Println("promql-check " + version)
		return
	}
	p := parser.NewParser(parser.Options{})
	failed := false
	out := json.NewEncoder(os.Stdout)
	for _, file := range os.Args[1:] {
		groups, errs := rulefmt.ParseFile(file, false, model.UTF8Validation, p, slog.New(slog.DiscardHandler))
		for _, err := range errs {
			fmt.Fprintln(os.Stderr, err)
			failed = true
		}
		if groups == nil {
			continue
		}
		for _, group := range groups.Groups {
			for _, r := range group.Rules {
				expr, err := p.ParseExpr(r.Expr)
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					failed = true
					continue
				}
				name := r.Alert
				if name == "" {
					name = r.Record
				}
				found := rule{Group: group.Name, Name: name, Selectors: [][]matcher{}}
				parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
					if vs, ok := node.(*parser.VectorSelector); ok {
						ms := []matcher{}
						for _, m := range vs.LabelMatchers {
							ms = append(ms, matcher{Name: m.Name, Type: m.Type.String(), Value: m.Value})
						}
						found.Selectors = append(found.Selectors, ms)
					}
					return nil
				})
				if err := out.Encode(found); err != nil {
					fmt.Fprintln(os.Stderr, err)
					failed = true
				}
			}
		}
	}
	if failed {
		os.Exit(1)
	}
}
GO
  go build -trimpath -ldflags "-s -w -X 'main.version=$PROMQL_CHECK_REVISION $PROMETHEUS_VERSION'" \
    -o "$out/promql-check.tmp" .
  mv -f "$out/promql-check.tmp" "$out/promql-check"
  "$out/promql-check" --version
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

  [[ "$ETCD_VERSION" =~ ^v3\.5\.[0-9]+$ ]] || die "ETCD_VERSION must be a v3.5.x release, not $ETCD_VERSION"
  [[ "$HELM_VERSION" =~ ^v3\.[0-9]+\.[0-9]+$ ]] || die "HELM_VERSION must look like v3.22.0, not $HELM_VERSION"

  local kube="$CACHE_DIR/kubernetes-$KUBE_VERSION/bin"
  local skew="$CACHE_DIR/kubernetes-$KUBE_SKEW_VERSION/bin"
  local oldest="$CACHE_DIR/kubernetes-$KUBELET_OLDEST_VERSION/bin"
  ETCD="$CACHE_DIR/etcd-$ETCD_VERSION/bin/etcd"
  HELM="$CACHE_DIR/helm-$HELM_VERSION/bin/helm"

  # etcd first (small, needed by every e2e test), then the long Kubernetes
  # build (every command of the node in one go build), then helm, then the
  # older releases of the version-skew tests, which reuse most of the
  # module cache.
  if tool_ok "$ETCD" "etcd Version: ${ETCD_VERSION#v}" --version; then
    log "etcd $ETCD_VERSION cached"
  else
    run_build etcd "$ETCD_VERSION" build_etcd
    tool_ok "$ETCD" "etcd Version: ${ETCD_VERSION#v}" --version || die "etcd built but --version is wrong"
  fi

  ensure_kubernetes "$KUBE_VERSION" "" \
    kube-apiserver kubectl kubelet kube-proxy kube-controller-manager kube-scheduler

  if tool_ok "$HELM" "Version:\"$HELM_VERSION\"" version; then
    log "helm $HELM_VERSION cached"
  else
    run_build helm "$HELM_VERSION" build_helm
    tool_ok "$HELM" "Version:\"$HELM_VERSION\"" version || die "helm built but 'helm version' is wrong"
  fi

  PROMQL_CHECK="$CACHE_DIR/promql-check-$PROMETHEUS_VERSION-$PROMQL_CHECK_REVISION/bin/promql-check"
  if tool_ok "$PROMQL_CHECK" "promql-check $PROMQL_CHECK_REVISION $PROMETHEUS_VERSION" --version; then
    log "promql-check $PROMQL_CHECK_REVISION $PROMETHEUS_VERSION cached"
  else
    run_build promql-check "$PROMETHEUS_VERSION" build_promql_check
    tool_ok "$PROMQL_CHECK" "promql-check $PROMQL_CHECK_REVISION $PROMETHEUS_VERSION" --version ||
      die "promql-check built but --version is wrong"
  fi

  # The whole older control plane: a kube-scheduler or kube-proxy newer than
  # the API server waits forever for APIs it does not serve.
  ensure_kubernetes "$KUBE_SKEW_VERSION" "$KUBE_SKEW_OVERRIDES" \
    kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet
  ensure_kubernetes "$KUBELET_OLDEST_VERSION" "$KUBELET_OLDEST_OVERRIDES" kubelet

  tmp_env="$(mktemp "$CACHE_DIR/.tools.env.XXXXXX")"
  {
    echo "KUBE_APISERVER=$kube/kube-apiserver"
    echo "KUBECTL=$kube/kubectl"
    echo "KUBELET=$kube/kubelet"
    echo "KUBE_PROXY=$kube/kube-proxy"
    echo "KUBE_CONTROLLER_MANAGER=$kube/kube-controller-manager"
    echo "KUBE_SCHEDULER=$kube/kube-scheduler"
    echo "ETCD=$ETCD"
    echo "HELM=$HELM"
    echo "KUBE_VERSION=$KUBE_VERSION"
    echo "ETCD_VERSION=$ETCD_VERSION"
    echo "HELM_VERSION=$HELM_VERSION"
    echo "PROMQL_CHECK=$PROMQL_CHECK"
    echo "SKEW_KUBE_APISERVER=$skew/kube-apiserver"
    echo "SKEW_KUBE_CONTROLLER_MANAGER=$skew/kube-controller-manager"
    echo "SKEW_KUBE_SCHEDULER=$skew/kube-scheduler"
    echo "SKEW_KUBE_PROXY=$skew/kube-proxy"
    echo "SKEW_KUBELET=$skew/kubelet"
    echo "SKEW_VERSION=$KUBE_SKEW_VERSION"
    echo "OLDEST_KUBELET=$oldest/kubelet"
    echo "OLDEST_KUBELET_VERSION=$KUBELET_OLDEST_VERSION"
  } > "$tmp_env"
  chmod 644 "$tmp_env"
  mv -f "$tmp_env" "$ENV_FILE"

  cat "$ENV_FILE"
}

main "$@"
