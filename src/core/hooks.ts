// Hook builders: each returns one preStop handler (exactly one handler key).
//
// The shell scripts use only POSIX sh builtins plus `sleep`: no netstat, ss or
// awk, which most images lack. They read /proc/net/tcp{,6}, which every
// container of a pod sees identically because they share one network
// namespace. Columns: sl local rem st queues timer retrnsmt uid ...; state 01
// is ESTABLISHED and 0A is LISTEN; the port is the hex after the colon.

import { isRecord, type LifecycleHandler } from './types.ts';

export function sleepAction(seconds: number): LifecycleHandler {
  return { sleep: { seconds } };
}

/** Sleep through the image's shell, so busybox applets count as `sleep`. */
export function execSleep(seconds: number): LifecycleHandler {
  return { exec: { command: ['/bin/sh', '-c', `sleep ${seconds}`] } };
}

/** For images that ship a sleep binary but no shell (Linkerd's proxy). */
export function execSleepBinary(path: string, seconds: number): LifecycleHandler {
  return { exec: { command: [path, String(seconds)] } };
}

const PROC_FILES = '/proc/net/tcp /proc/net/tcp6';
const LOOPBACK_PATTERNS =
  '??????7F|0000000000000000FFFF0000??????7F|00000000000000000000000001000000';
/** An IPv4 address as /proc/net/tcp6 writes it: ::ffff:a.b.c.d. */
const V4_MAPPED_PREFIX = '0000000000000000FFFF0000';

/**
 * Waits `delaySeconds`, then while any ESTABLISHED socket has a local port
 * that something LISTENs on (an inbound connection) and a peer outside the
 * pod, for at most `timeoutSeconds` more.
 *
 * Peers inside the pod are skipped: loopback, and the pod's own addresses
 * (every local address of a socket in the table). They are the pod's own
 * containers: a mesh sidecar's connection pool to the app, and, under
 * Istio's outbound capture, the app's own pooled outbound connections,
 * which reach the proxy's port 15001 from the pod's IP. Counting them would
 * always run to the timeout; the sidecar's hold covers those.
 *
 * With `quietSeconds` > 0 it also ends once the pod has been quiet that many
 * seconds in a row: no connection opened and no TCP segment in or out beyond
 * what closing connections and keepalive probes exchange (read from
 * /proc/net/snmp and /proc/net/netstat, one set of counters per network
 * namespace). A load balancer's pooled keep-alive connections stay
 * ESTABLISHED and idle long after it stopped using them, and no socket table
 * tells an idle connection from one whose request is still being worked on;
 * silence is what they have in common, so the setting must exceed the
 * longest time a request stays silent. What idle connections still exchange
 * is not activity: load balancers close idle pooled connections a few at a
 * time (HAProxy halves its idle pool every 5 s), and clients with TCP
 * keepalive probe idle ones every second or so (Node.js agents do, as do the
 * pool between a mesh sidecar and its app); each would otherwise restart the
 * count. A clean close exchanges at most four segments (FIN and ACK each
 * way), a probe at most four counted in the pod (two, each seen twice over
 * loopback). An unreadable file never counts as quiet.
 */
export function drainScript(
  delaySeconds: number,
  timeoutSeconds: number,
  quietSeconds = 0,
): string {
  const lines = [
    `sleep ${delaySeconds}`,
    // l: listening ports; o: the pod's own addresses, v4-mapped ones as plain v4.
    'inbound() {',
    "  l=' '",
    "  o=' '",
    `  for f in ${PROC_FILES}; do`,
    '    [ -r "$f" ] || continue',
    '    while read -r n a r s x; do',
    '      [ "$s" = 0A ] && l="$l${a##*:} "',
    // A pod has few distinct local addresses: each is kept once, so o stays short.
    `      x=\${a%%:*}; x=\${x#${V4_MAPPED_PREFIX}}`,
    '      case "$o" in *" $x "*) ;; *) o="$o$x " ;; esac',
    '    done < "$f"',
    '  done',
    `  for f in ${PROC_FILES}; do`,
    '    [ -r "$f" ] || continue',
    '    while read -r n a r s x; do',
    '      [ "$s" = 01 ] || continue',
    // 127.0.0.0/8 (little-endian hex, so its first octet is last), ::ffff:127.x, ::1.
    `      case "\${r%%:*}" in ${LOOPBACK_PATTERNS}) continue ;; esac`,
    '      p=${r%%:*}',
    `      p=\${p#${V4_MAPPED_PREFIX}}`,
    '      case "$o" in *" $p "*) continue ;; esac',
    '      case "$l" in *" ${a##*:} "*) return 0 ;; esac',
    '    done < "$f"',
    '  done',
    '  return 1',
    '}',
  ];
  if (quietSeconds <= 0) {
    lines.push(
      'i=0',
      `while [ "$i" -lt ${timeoutSeconds} ] && inbound; do sleep 1; i=$((i + 1)); done`,
      '',
    );
    return lines.join('\n');
  }
  lines.push(
    // h and v: the names and the values of a /proc/net file's lines under a
    // prefix ("Tcp:", "TcpExt:"), which come in pairs.
    'pair() {',
    "  h=''",
    "  v=''",
    '  while read -r k w; do',
    '    [ "$k" = "$2" ] || continue',
    '    if [ -z "$h" ]; then h=$w; else v=$w; fi',
    '  done < "$1"',
    '}',
    // op: connections opened; es: established ones; sg: segments in, out and
    // resent; ka: keepalive probes sent. Names apart from inbound()'s, whose
    // loop sets s.
    'tcp() {',
    '  [ -r /proc/net/snmp ] || return 1',
    '  pair /proc/net/snmp Tcp:',
    '  op=0',
    "  es=''",
    '  sg=0',
    '  m=0',
    '  set -- $v',
    '  for n in $h; do',
    '    case "$n" in',
    '      ActiveOpens | PassiveOpens) op=$((op + $1)) m=$((m + 1)) ;;',
    '      InSegs | OutSegs | RetransSegs) sg=$((sg + $1)) m=$((m + 1)) ;;',
    '      CurrEstab) es=$1 ;;',
    '    esac',
    '    [ $# -gt 0 ] && shift',
    '  done',
    '  [ "$m" = 5 ] && [ -n "$es" ] || return 1',
    // Without the count, keepalive probes count as traffic: never quiet sooner.
    '  ka=0',
    '  [ -r /proc/net/netstat ] || return 0',
    '  pair /proc/net/netstat TcpExt:',
    '  set -- $v',
    '  for n in $h; do',
    '    [ "$n" = TCPKeepAlive ] && ka=$1',
    '    [ $# -gt 0 ] && shift',
    '  done',
    '  return 0',
    '}',
    'i=0',
    'q=0',
    "pop=''",
    'if tcp; then pop=$op; pes=$es; psg=$sg; pka=$ka; fi',
    `while [ "$i" -lt ${timeoutSeconds} ] && [ "$q" -lt ${quietSeconds} ] && inbound; do`,
    '  sleep 1',
    '  i=$((i + 1))',
    '  if tcp && [ -n "$pop" ]; then',
    // Closed meanwhile: those opened, less the rise in established ones.
    '    d=$((op - pop - (es - pes)))',
    '    b=$((4 * d + 4 * (ka - pka)))',
    '    if [ "$op" = "$pop" ] && [ $((sg - psg)) -le "$b" ]; then q=$((q + 1)); else q=0; fi',
    '  else',
    '    q=0',
    "    pop=''",
    '    tcp || continue',
    '  fi',
    '  pop=$op',
    '  pes=$es',
    '  psg=$sg',
    '  pka=$ka',
    'done',
    '',
  );
  return lines.join('\n');
}

export function drainHook(
  delaySeconds: number,
  timeoutSeconds: number,
  quietSeconds = 0,
): LifecycleHandler {
  return {
    exec: { command: ['/bin/sh', '-c', drainScript(delaySeconds, timeoutSeconds, quietSeconds)] },
  };
}

/**
 * Holds a mesh proxy: waits `minSeconds`, then while any ESTABLISHED socket in
 * the pod belongs to a uid other than the proxy's (the app's inbound and
 * outbound connections), up to `maxSeconds` in all.
 */
export function proxyHoldScript(minSeconds: number, maxSeconds: number, proxyUid: number): string {
  return [
    `sleep ${minSeconds}`,
    'busy() {',
    `  for f in ${PROC_FILES}; do`,
    '    [ -r "$f" ] || continue',
    '    while read -r n a r s q t rt u x; do',
    `      [ "$s" = 01 ] && [ "$u" != ${proxyUid} ] && return 0`,
    '    done < "$f"',
    '  done',
    '  return 1',
    '}',
    `i=${minSeconds}`,
    `while [ "$i" -lt ${maxSeconds} ] && busy; do sleep 1; i=$((i + 1)); done`,
    '',
  ].join('\n');
}

export function proxyHoldHook(
  minSeconds: number,
  maxSeconds: number,
  proxyUid: number,
): LifecycleHandler {
  return {
    exec: { command: ['/bin/sh', '-c', proxyHoldScript(minSeconds, maxSeconds, proxyUid)] },
  };
}

/**
 * How long a hook someone else wrote runs, when that is fixed: a sleep
 * action, or a plain `sleep N` command (through a shell or not). Null for
 * anything else.
 */
export function fixedHookSeconds(handler: LifecycleHandler | undefined): number | null {
  if (handler === undefined) return null;
  if (isRecord(handler.sleep) && typeof handler.sleep.seconds === 'number') {
    return handler.sleep.seconds;
  }
  const command = isRecord(handler.exec) ? handler.exec.command : undefined;
  if (!Array.isArray(command) || !command.every((part) => typeof part === 'string')) return null;
  const shell =
    command.length === 3 && /(^|\/)(ba|da)?sh$/.test(command[0]!) && command[1] === '-c';
  const words = shell ? command[2]!.trim().split(/\s+/) : command;
  if (words.length !== 2 || !/^(?:\S*\/)?sleep$/.test(words[0]!) || !/^\d+$/.test(words[1]!)) {
    return null;
  }
  return Number(words[1]);
}

const HANDLER_KEYS = ['exec', 'httpGet', 'tcpSocket', 'sleep'] as const;

/** The handler keys set on a hook; a valid hook has exactly one. */
export function handlerKeys(handler: LifecycleHandler | undefined): string[] {
  if (handler === undefined || handler === null) return [];
  return HANDLER_KEYS.filter((key) => handler[key] !== undefined && handler[key] !== null);
}
