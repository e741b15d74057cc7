#!/usr/bin/env bash
# Debian packages the tests use, installed only when missing (apt-get update
# at most once a day). No service is started by an install: a policy-rc.d
# refuses every start while apt runs, so containerd and the rest run only as
# the tests start them, with their own state.
#
#   busybox-static    the hook scripts run under busybox sh as well as dash,
#                     and it is the shell of the test images (it replaces
#                     Debian's busybox, which provides the same /bin/busybox)
#   iproute2          network namespaces
#   containerd, runc, containernetworking-plugins, iptables, nftables,
#   conntrack         the real node (test/support/node)
#   buildah           builds the webhook's image from the Dockerfile
#
# Extra packages may be named as arguments.
set -euo pipefail

packages=(busybox-static iproute2 containerd runc containernetworking-plugins iptables
  nftables conntrack buildah "$@")
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-debian-packages: need root to install: ${missing[*]}" >&2
  exit 1
fi
stamp=/var/lib/apt/periodic/prestop-injector-update-stamp
if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440 2>/dev/null)" ]; then
  apt-get update -qq
  mkdir -p "$(dirname "$stamp")" && touch "$stamp"
fi

# Refuse service starts for the length of the install, unless one was there.
policy=/usr/sbin/policy-rc.d
own_policy=false
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  own_policy=true
fi
cleanup() { if $own_policy; then rm -f "$policy"; fi; }
trap cleanup EXIT

DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-debian-packages: installed ${missing[*]}"
