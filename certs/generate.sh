#!/usr/bin/env bash
# Makes a development CA and a serving certificate signed by it:
#   certs/generate.sh [OUT_DIR] [DNS_NAME_OR_IP ...]
# Writes OUT_DIR/ca.crt, OUT_DIR/ca.key, OUT_DIR/tls.crt and OUT_DIR/tls.key.
# The SANs always include localhost and 127.0.0.1; add in-cluster Service
# names such as prestop-injector.prestop-system.svc as extra arguments.
# With CA_DIR set (holding ca.crt and ca.key), the serving certificate is
# signed by that CA instead of a new one: a leaf rotation that keeps the
# caBundle the API server trusts.
set -euo pipefail

out="${1:-$(dirname "$0")}"
shift || true
mkdir -p "$out"
umask 077

sans="DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "$@"; do
  if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then
    sans="$sans,IP:$name"
  else
    sans="$sans,DNS:$name"
  fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ -n "${CA_DIR:-}" ]; then
  cp "$CA_DIR/ca.crt" "$CA_DIR/ca.key" "$work/"
else
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
    -subj "/CN=prestop-injector dev CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
fi

openssl req -newkey rsa:2048 -nodes -sha256 \
  -subj "/CN=prestop-injector" \
  -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null

printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
  "$sans" >"$work/ext.cnf"

openssl x509 -req -sha256 -days 825 -in "$work/tls.csr" \
  -CA "$work/ca.crt" -CAkey "$work/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
  -extfile "$work/ext.cnf" -out "$work/tls.crt" 2>/dev/null

chmod 644 "$work/ca.crt" "$work/tls.crt"
# Key before certificate, each by rename: a watcher never sees a half-written file.
for f in ca.key ca.crt tls.key tls.crt; do
  mv -f "$work/$f" "$out/$f"
done
echo "wrote $out/ca.crt $out/tls.crt $out/tls.key (SANs: $sans)"
