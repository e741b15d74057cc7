// Whether this node sends new connections to removed pods: from its kernel,
// its IPVS sysctls and kube-proxy's mode. Pure; node.ts gathers the facts.
//
// The kernel rules (net/netfilter/ipvs/ip_vs_core.c, ip_vs_in):
// - conn_reuse_mode=0: a SYN that matches an old entry (same client address
//   and port) goes to that entry's real server, without scheduling.
// - expire_nodest_conn=1: such a SYN is rescheduled when the entry's real
//   server has weight 0, but only since upstream commit c95c07836fa4
//   ("ipvs: Fix reuse connection if RS weight is 0", Linux 5.16, backported
//   to the 4.19, 5.4, 5.10 and 5.15 stable series in late 2021); before it,
//   only when conn_reuse_mode is not 0. And an entry whose real server was
//   deleted is expired by the next packet instead of dropping it.
// - conn_reuse_mode=1 (the kernel's default): a SYN matching an entry in
//   TIME_WAIT is rescheduled. kube-proxy sets 0 on kernels older than 5.9,
//   where 1 delays those connections by a second when conntrack is on.

export interface NodeFacts {
  /** uname -r */
  kernel: string;
  /** null: no /proc/sys/net/ipv4/vs, IPVS is not loaded. */
  connReuseMode: number | null;
  expireNodestConn: number | null;
  /** From kube-proxy's /proxyMode, or "ipvs" when kube-ipvs0 exists; null when unknown. */
  kubeProxyMode: string | null;
  kubeProxyModeSource: 'kube-proxy' | 'kube-ipvs0 interface' | 'unknown';
  virtualServices: number;
}

type Exposure = 'exposed' | 'possibly exposed' | 'not exposed';

export interface Diagnosis {
  facts: NodeFacts;
  exposure: Exposure;
  /** One sentence each: why, and what to do. */
  reasons: string[];
  /** Whether deleting a real server makes the kernel expire its connection entries. */
  reapedEntriesExpire: boolean;
}

/** The weight-0 fix's upstream release; stable backports came in late 2021. */
const WEIGHT_ZERO_FIX = { major: 5, minor: 16 };
const CONN_REUSE_FIX = { major: 5, minor: 9 };

export function kernelVersion(release: string): { major: number; minor: number } | null {
  const match = /^(\d+)\.(\d+)/.exec(release);
  return match ? { major: Number(match[1]), minor: Number(match[2]) } : null;
}

function atLeast(
  version: { major: number; minor: number } | null,
  than: { major: number; minor: number },
): boolean {
  if (version === null) return false;
  return version.major !== than.major ? version.major > than.major : version.minor >= than.minor;
}

export function diagnose(facts: NodeFacts): Diagnosis {
  const { connReuseMode, expireNodestConn, kubeProxyMode } = facts;
  const kernel = kernelVersion(facts.kernel);
  const reasons: string[] = [];
  const expireAdvice =
    'set net.ipv4.vs.expire_nodest_conn=1 (kube-proxy sets it itself in IPVS mode)';
  const result = (exposure: Exposure): Diagnosis => ({
    facts,
    exposure,
    reasons,
    reapedEntriesExpire: expireNodestConn === 1,
  });

  if (connReuseMode === null || expireNodestConn === null) {
    reasons.push('IPVS is not loaded (no /proc/sys/net/ipv4/vs): nothing to reap.');
    return result('not exposed');
  }
  if (kubeProxyMode !== null && kubeProxyMode !== 'ipvs' && facts.virtualServices === 0) {
    reasons.push(`kube-proxy runs in ${kubeProxyMode} mode and there is no IPVS service.`);
    return result('not exposed');
  }
  if (connReuseMode !== 0 && expireNodestConn !== 0) {
    reasons.push(
      'conn_reuse_mode and expire_nodest_conn are on: the kernel reschedules new connections away from removed pods; the sysctls are the fix, no reaper is needed.',
    );
    if (!atLeast(kernel, CONN_REUSE_FIX)) {
      reasons.push(
        `Kernel ${facts.kernel} is older than 5.9: with conn_reuse_mode=1 and conntrack on, a reused port's connection waits a second.`,
      );
    }
    return result('not exposed');
  }
  if (connReuseMode !== 0) {
    reasons.push(
      'conn_reuse_mode=1 reschedules connections that reuse a port in TIME_WAIT; one whose last connection ended in a reset still follows it to a removed pod.',
      `Nothing expires the connection entries of deleted real servers: ${expireAdvice}.`,
    );
    return result('possibly exposed');
  }
  if (expireNodestConn === 0) {
    reasons.push(
      'conn_reuse_mode=0 and expire_nodest_conn=0: a new connection that reuses a source port follows its old entry to a weight-0 real server, whose pod may be gone.',
      `A reaped real server's entries then drop new connections until they time out (up to 2 minutes): ${expireAdvice}${atLeast(kernel, WEIGHT_ZERO_FIX) ? `; on kernel ${facts.kernel} that alone fixes it` : ''}.`,
    );
    return result('exposed');
  }
  if (atLeast(kernel, WEIGHT_ZERO_FIX)) {
    reasons.push(
      `conn_reuse_mode=0, but kernel ${facts.kernel} reschedules connections away from weight-0 real servers when expire_nodest_conn=1: no reaper is needed.`,
    );
    return result('not exposed');
  }
  reasons.push(
    `conn_reuse_mode=0 on kernel ${facts.kernel}: unless it carries upstream commit c95c07836fa4 (stable kernels from late 2021), a new connection that reuses a source port follows its old entry to a weight-0 real server, whose pod may be gone. The reaper removes those once the pod is gone.`,
  );
  return result('possibly exposed');
}

/** The diagnosis as lines for a terminal. */
export function formatDiagnosis(diagnosis: Diagnosis): string {
  const { facts } = diagnosis;
  const show = (value: number | null) => (value === null ? 'n/a' : String(value));
  return [
    `kernel:             ${facts.kernel}`,
    `conn_reuse_mode:    ${show(facts.connReuseMode)}`,
    `expire_nodest_conn: ${show(facts.expireNodestConn)}`,
    `kube-proxy mode:    ${facts.kubeProxyMode ?? 'unknown'} (from ${facts.kubeProxyModeSource})`,
    `IPVS services:      ${facts.virtualServices}`,
    `exposed:            ${diagnosis.exposure}`,
    ...diagnosis.reasons.map((reason) => `  - ${reason}`),
    '',
  ].join('\n');
}
