#!/bin/sh
# ipvsadm for the lab's reapers, emulating a node whose kernel lacks
# upstream commit c95c07836fa4 under kube-proxy's expire_nodest_conn=1.
# The guest's kernel (6.1) has the commit: with expire_nodest_conn=1 it
# reschedules connections away from weight-0 real servers by itself, which
# would hide the failure. So the lab keeps expire_nodest_conn=0 (weight-0
# real servers keep reused connections, as on such a kernel) and sets it to
# 1 only around a deletion: the kernel then queues the expiry of the deleted
# real server's connection entries, as it does on such a kernel with 1.
set -u
sysctl=/proc/sys/net/ipv4/vs/expire_nodest_conn
if [ "${1:-}" = "-d" ]; then
  echo 1 > "$sysctl"
  /opt/bin/ipvsadm "$@"
  status=$?
  # The expiry was queued at the deletion; the work does not read it again.
  echo 0 > "$sysctl"
  exit "$status"
fi
exec /opt/bin/ipvsadm "$@"
