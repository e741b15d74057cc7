// Cluster capabilities derived from the API server version, with operator
// overrides for distributions that patch versions.

export interface KubeVersion {
  major: number;
  minor: number;
}

export interface Capabilities {
  /** Null when the version is unknown (no cluster, nothing configured). */
  kubeVersion: KubeVersion | null;
  /** lifecycle.*.sleep (KEP-3960): beta and on by default from 1.30. */
  sleepAction: boolean;
  /** sleep.seconds: 0 is valid from 1.33 (KEP-4818). */
  zeroSleep: boolean;
  /** Init containers with restartPolicy Always (KEP-753): on by default from 1.29. */
  nativeSidecars: boolean;
}

export type Override = 'auto' | 'on' | 'off';

export interface CapabilityOverrides {
  sleepAction?: Override;
  zeroSleep?: Override;
  nativeSidecars?: Override;
}

/** Accepts "1.30", "v1.30.2", "1.30+", "v1.29.3-eks-abcdef". */
export function parseKubeVersion(text: string | undefined | null): KubeVersion | null {
  if (text === undefined || text === null) return null;
  const match = /^v?(\d+)\.(\d+)/.exec(text.trim());
  if (match === null) return null;
  return { major: Number(match[1]), minor: Number(match[2]) };
}

export function formatKubeVersion(version: KubeVersion | null): string {
  return version === null ? 'unknown' : `${version.major}.${version.minor}`;
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
  version: KubeVersion | null,
  overrides: CapabilityOverrides = {},
): Capabilities {
  return {
    kubeVersion: version,
    sleepAction: apply(atLeast(version, 30), overrides.sleepAction),
    zeroSleep: apply(atLeast(version, 33), overrides.zeroSleep),
    nativeSidecars: apply(atLeast(version, 29), overrides.nativeSidecars),
  };
}

export function parseOverride(text: string): Override | null {
  const value = text.trim().toLowerCase();
  if (value === 'auto' || value === 'on' || value === 'off') return value;
  if (value === 'true') return 'on';
  if (value === 'false') return 'off';
  return null;
}
