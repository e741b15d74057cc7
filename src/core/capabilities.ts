// Cluster capabilities: what the API server stores and what every kubelet
// runs, with operator overrides for distributions that patch versions.
//
// The sleep action needs both. An API server of 1.29 (or 1.30-1.33 with the
// PodLifecycleSleepAction gate off) silently drops the handler, and one of
// 1.28 or older rejects the pod. A 1.29 kubelet returns from the hook at
// once, and one of 1.28 or older fails it: either way SIGTERM comes at t=0.
// Kubelets may be three minors older than the API server, so the sleep
// action is emitted only when the API server and the oldest kubelet are
// both 1.30 or newer (and the server's gate, when known, is on).

export interface KubeVersion {
  major: number;
  minor: number;
}

/** What is known of the cluster's versions. */
export interface ClusterVersions {
  /** The API server's version; null when unknown. */
  server: KubeVersion | null;
  /** The oldest kubelet of any node; null when unknown (no node list yet, or no access). */
  oldestKubelet: KubeVersion | null;
  /**
   * The API server's own PodLifecycleSleepAction gate, read from its
   * metrics; null when not read (the version's default is assumed).
   */
  sleepActionGate?: boolean | null;
}

export interface Capabilities {
  versions: ClusterVersions;
  /** lifecycle.*.sleep (KEP-3960): beta and on by default from 1.30, on server and kubelets. */
  sleepAction: boolean;
  /** sleep.seconds: 0 is valid from 1.33 (KEP-4818). */
  zeroSleep: boolean;
  /** Init containers with restartPolicy Always (KEP-753): on by default from 1.29. */
  nativeSidecars: boolean;
}

export type Override = 'auto' | 'on' | 'off';

export interface CapabilityOverrides {
  sleepAction?: Override;
}

/** Accepts "1.30", "v1.30.2", "1.30+", "v1.29.3-eks-abcdef". */
export function parseKubeVersion(text: string | undefined | null): KubeVersion | null {
  if (typeof text !== 'string') return null;
  const match = /^v?(\d+)\.(\d+)/.exec(text.trim());
  if (match === null) return null;
  return { major: Number(match[1]), minor: Number(match[2]) };
}

export function formatKubeVersion(version: KubeVersion | null): string {
  return version === null ? 'unknown' : `${version.major}.${version.minor}`;
}

/** The older of two versions; unknown is older than any. */
export function olderVersion(a: KubeVersion | null, b: KubeVersion | null): KubeVersion | null {
  if (a === null || b === null) return null;
  return a.major < b.major || (a.major === b.major && a.minor <= b.minor) ? a : b;
}

/** One version for the API server and every kubelet, as --kube-version gives it. */
export function uniformVersions(version: KubeVersion | null): ClusterVersions {
  return { server: version, oldestKubelet: version };
}

function atLeast(version: KubeVersion | null, minor: number): boolean {
  if (version === null) return false;
  return version.major > 1 || (version.major === 1 && version.minor >= minor);
}

function apply(derived: boolean, override: Override | undefined): boolean {
  if (override === 'on') return true;
  if (override === 'off') return false;
  return derived;
}

export function capabilitiesFor(
  versions: ClusterVersions,
  overrides: CapabilityOverrides = {},
): Capabilities {
  const everywhere = olderVersion(versions.server, versions.oldestKubelet);
  const sleepAction = atLeast(everywhere, 30) && versions.sleepActionGate !== false;
  return {
    versions,
    sleepAction: apply(sleepAction, overrides.sleepAction),
    zeroSleep: atLeast(everywhere, 33),
    nativeSidecars: atLeast(everywhere, 29),
  };
}

export function parseOverride(text: string): Override | null {
  const value = text.trim().toLowerCase();
  if (value === 'auto' || value === 'on' || value === 'off') return value;
  if (value === 'true') return 'on';
  if (value === 'false') return 'off';
  return null;
}
