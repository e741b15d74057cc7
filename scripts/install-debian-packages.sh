#!/usr/bin/env bash
# Debian packages the tests use: busybox (the hook scripts run under busybox
# sh as well as dash), iproute2 (network namespaces). Idempotent: installs
# only what is missing, and runs apt-get update at most once a day.
set -euo pipefail

packages=(busybox iproute2 "$@")
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
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-debian-packages: installed ${missing[*]}"
