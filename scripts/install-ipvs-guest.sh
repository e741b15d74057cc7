#!/usr/bin/env bash
# Builds (once per machine, cached) the guest of the IPVS lab (test/ipvs): a
# User-Mode Linux kernel from Debian's user-mode-linux package (Linux 6.1
# with the IPVS modules) and an initramfs with busybox-static, ipvsadm,
# iproute2 (busybox's ip has no netns), the libraries of those and of the
# pinned Node.js (its binary and the project are read through hostfs), and
# the modules IPVS needs, in dependency order.
#
# Prints KEY=VALUE lines: UML_KERNEL, INITRAMFS. The cache lives outside the
# work tree, keyed by this script and the packages' versions:
#   ${PRESTOP_TOOLS_CACHE:-$HOME/.cache/prestop-injector}/ipvs-guest-<key>/initramfs.cpio
#
# The guest's /init takes its settings from the kernel command line (unknown
# KEY=VALUE words become its environment): PRESTOP_REPO (host path of the
# work tree, mounted read-only at /repo), PRESTOP_OUT (host directory mounted
# read-write at /out), PRESTOP_IP (the guest's address on vec0, if any) and
# PRESTOP_MAIN (a .ts file under /repo that /init runs with Node, given /out).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
cache_root="${PRESTOP_TOOLS_CACHE:-$HOME/.cache/prestop-injector}"
node_binary="$repo/node_modules/node/bin/node"
# ip_vs_wlc: ipvsadm's default scheduler, which the edge check's firewall-mark service uses.
modules_wanted=(ip_vs ip_vs_rr ip_vs_wlc veth dummy)
packages=(user-mode-linux ipvsadm iproute2 busybox-static)

log() { printf '[install-ipvs-guest] %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

[[ -x "$node_binary" ]] || die "no $node_binary: run npm install first"
bash "$here/install-debian-packages.sh" "${packages[@]}" >&2

uml_kernel=/usr/bin/linux.uml
[[ -x "$uml_kernel" ]] || die "user-mode-linux did not install $uml_kernel"
module_dirs=(/usr/lib/uml/modules/*/)
[[ ${#module_dirs[@]} -eq 1 && -f "${module_dirs[0]}modules.dep" ]] ||
  die "expected one module tree under /usr/lib/uml/modules, found: ${module_dirs[*]}"
module_dir="${module_dirs[0]%/}"

versions="$(dpkg-query -W -f='${Package}=${Version}\n' "${packages[@]}" libc6)"
key="$( (cat "${BASH_SOURCE[0]}"; echo "$versions"; sha256sum < "$node_binary") | sha256sum | cut -c1-16)"
out_dir="$cache_root/ipvs-guest-$key"
initramfs="$out_dir/initramfs.cpio"

mkdir -p "$cache_root"
exec 9> "$cache_root/.ipvs-guest.lock"
flock 9

if [[ ! -f "$initramfs" ]]; then
  start=$SECONDS
  log "building the guest initramfs in $out_dir"
  work="$(mktemp -d "$cache_root/.ipvs-guest-build.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  root="$work/root"
  mkdir -p "$root"/{bin,opt/bin,proc,sys,dev,tmp,run/netns,repo,out,modules,etc}

  cp /usr/bin/busybox "$root/bin/busybox"
  # Outside busybox's applet directories: its shell prefers applets by name.
  cp "$(command -v ipvsadm)" "$(command -v ip)" "$root/opt/bin/"

  # Every shared library the guest's programs load, at the host's paths.
  libraries="$(ldd "$root/opt/bin/ipvsadm" "$root/opt/bin/ip" "$node_binary" |
    grep -o '/[^ ]*\.so[^ ]*' | sort -u)"
  for lib in $libraries; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done

  # The modules and what they need, dependencies first (modules.dep lists
  # each module's dependencies, the deepest last).
  declare -A loaded=()
  order=()
  add_module() {
    local path="$1" dep
    [[ -n "${loaded[$path]:-}" ]] && return
    local deps
    deps="$(awk -v m="$path:" '$1 == m { for (i = NF; i > 1; i--) print $i }' "$module_dir/modules.dep")"
    for dep in $deps; do add_module "$dep"; done
    loaded[$path]=1
    order+=("$path")
  }
  for name in "${modules_wanted[@]}"; do
    path="$(awk -F: -v n="/$name.ko" 'index($1, n) && substr($1, length($1) - length(n) + 1) == n { print $1; exit }' "$module_dir/modules.dep")"
    [[ -n "$path" ]] || die "module $name is not in $module_dir"
    add_module "$path"
  done
  for path in "${order[@]}"; do
    cp "$module_dir/$path" "$root/modules/"
    basename "$path" >> "$root/modules/order"
  done

  cat > "$root/init" <<'INIT'
#!/bin/busybox sh
# The IPVS lab guest: mounts, modules, network, then the program to run.
/bin/busybox --install -s /bin
export PATH=/opt/bin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
# /dev/null and friends: programs open them (Node for an ignored stdio).
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir -p /run/netns
for module in $(cat /modules/order); do
  insmod "/modules/$module" || echo "guest: insmod $module failed"
done
/opt/bin/ip link set lo up
mount -t hostfs -o "$PRESTOP_REPO" hostfs /repo
mount -o remount,ro /repo
mount -t hostfs -o "$PRESTOP_OUT" hostfs /out
if [ -n "${PRESTOP_IP:-}" ]; then
  /opt/bin/ip addr add "$PRESTOP_IP" dev vec0
  /opt/bin/ip link set vec0 up
fi
status=1
if [ -n "${PRESTOP_MAIN:-}" ]; then
  cd /repo
  /repo/node_modules/node/bin/node "/repo/$PRESTOP_MAIN" /out
  status=$?
fi
echo "$status" > /out/guest-exit-status
sync
poweroff -f
INIT
  chmod 755 "$root/init"

  mkdir -p "$out_dir"
  (cd "$root" && find . | busybox cpio -o -H newc > "$work/initramfs.cpio" 2>/dev/null)
  mv -f "$work/initramfs.cpio" "$initramfs"
  log "built $initramfs ($(du -h "$initramfs" | cut -f1)) in $((SECONDS - start))s"
else
  log "cached: $initramfs"
fi

echo "UML_KERNEL=$uml_kernel"
echo "INITRAMFS=$initramfs"
