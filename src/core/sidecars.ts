// Sidecar rules: which containers are mesh proxies or helpers that must
// outlive the app, and what each one needs to know about them.

import { ForeignAnnotation } from './annotations.ts';
import { memoize } from './memo.ts';
import type { Container, PodLike } from './types.ts';

export type SidecarKind = 'istio' | 'linkerd' | 'helper';

export interface Sidecar {
  name: string;
  kind: SidecarKind;
  /** An init container with restartPolicy Always: Kubernetes orders it. */
  native: boolean;
  /** The image has no shell (Istio's -distroless variants). */
  distroless: boolean;
  /** Owner uid of the proxy's own sockets. */
  uid: number;
  /** Seconds the proxy itself drains after SIGTERM. */
  drainSeconds: number;
  /** Istio minor version read from the image tag, when there is one. */
  istioMinor: number | null;
}

export const ISTIO_PROXY = 'istio-proxy';
export const LINKERD_PROXY = 'linkerd-proxy';
/** The proxy's own drain setting, read when the pod annotation has none. */
export const ISTIO_DRAIN_ENV = 'TERMINATION_DRAIN_DURATION_SECONDS';
const ISTIO_UID = 1337;
const LINKERD_UID = 2102;
const ISTIO_DEFAULT_DRAIN_SECONDS = 5;
/** Linkerd finishes in-flight requests and exits; the hold already covered the app. */
const LINKERD_DRAIN_SECONDS = 0;

export function isNativeSidecar(container: Container): boolean {
  return container.restartPolicy === 'Always';
}

function imageTag(image: string | undefined): string {
  if (image === undefined) return '';
  const withoutDigest = image.split('@')[0] ?? '';
  const lastSlash = withoutDigest.lastIndexOf('/');
  const colon = withoutDigest.indexOf(':', lastSlash + 1);
  return colon === -1 ? '' : withoutDigest.slice(colon + 1);
}

/** Per list of patterns (one per config), each image's answer: a pod repeats a few images. */
const distrolessByPatterns = new WeakMap<readonly string[], (image: string) => boolean>();

/** True for images that ship no shell and no sleep. */
export function isDistrolessImage(image: string | undefined, patterns: readonly string[]): boolean {
  if (image === undefined) return false;
  let test = distrolessByPatterns.get(patterns);
  if (test === undefined) {
    test = memoize((name: string) => {
      const lower = name.toLowerCase();
      return lower.includes('distroless') || patterns.some((p) => p !== '' && lower.includes(p));
    });
    distrolessByPatterns.set(patterns, test);
  }
  return test(image);
}

const istioMinorFromImage = memoize((image: string | undefined): number | null => {
  const match = /^(\d+)\.(\d+)/.exec(imageTag(image));
  if (match === null || match[1] !== '1') return null;
  return Number(match[2]);
});

/** Parses a Go duration such as "5s", "1m30s" or "2500ms", rounded up to seconds. */
export function parseGoDurationSeconds(text: string): number | null {
  const trimmed = text.trim();
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(trimmed)) return null;
  let seconds = 0;
  for (const part of trimmed.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) {
    const amount = Number(part[1]);
    const unit = part[2];
    seconds +=
      unit === 'ms'
        ? amount / 1000
        : unit === 's'
          ? amount
          : unit === 'm'
            ? amount * 60
            : amount * 3600;
  }
  return Math.ceil(seconds);
}

/** The drain set in a proxy.istio.io/config annotation; a cluster has few distinct ones. */
const configuredDrainSeconds = memoize((config: string): number | null => {
  const match = /terminationDrainDuration["']?\s*:\s*["']?([0-9.a-z]+)/.exec(config);
  return match?.[1] === undefined ? null : parseGoDurationSeconds(match[1]);
});

function istioDrainSeconds(pod: PodLike, proxy: Container): number {
  const config = pod.metadata?.annotations?.[ForeignAnnotation.istioProxyConfig];
  if (config !== undefined) {
    const seconds = configuredDrainSeconds(config);
    if (seconds !== null) return Math.min(seconds, 3600);
  }
  const env = proxy.env?.find((v) => v.name === ISTIO_DRAIN_ENV);
  if (env?.value !== undefined && /^\d+$/.test(env.value)) return Math.min(Number(env.value), 3600);
  return ISTIO_DEFAULT_DRAIN_SECONDS;
}

export interface SidecarConfig {
  distrolessPatterns: readonly string[];
  /** Names of other long-lived helpers that must outlive the app. */
  helperSidecars: readonly string[];
}

/** Every container that is not an app container, in the order found. */
export function findSidecars(pod: PodLike, config: SidecarConfig): Sidecar[] {
  const found: Sidecar[] = [];
  const consider = (container: Container, native: boolean) => {
    const base = {
      name: container.name,
      native,
      distroless: isDistrolessImage(container.image, config.distrolessPatterns),
      istioMinor: null,
    };
    const runAsUser = container.securityContext?.runAsUser;
    const uidOr = (fallback: number) => (typeof runAsUser === 'number' ? runAsUser : fallback);
    if (container.name === ISTIO_PROXY) {
      found.push({
        ...base,
        kind: 'istio',
        uid: uidOr(ISTIO_UID),
        drainSeconds: istioDrainSeconds(pod, container),
        istioMinor: istioMinorFromImage(container.image),
      });
    } else if (container.name === LINKERD_PROXY) {
      found.push({
        ...base,
        kind: 'linkerd',
        uid: uidOr(LINKERD_UID),
        drainSeconds: LINKERD_DRAIN_SECONDS,
      });
    } else if (config.helperSidecars.includes(container.name)) {
      found.push({ ...base, kind: 'helper', uid: uidOr(-1), drainSeconds: 0 });
    }
  };
  for (const container of pod.spec.initContainers ?? []) {
    if (isNativeSidecar(container)) consider(container, true);
  }
  for (const container of pod.spec.containers) consider(container, false);
  return found;
}

export function isMeshProxy(sidecar: Sidecar): boolean {
  return sidecar.kind === 'istio' || sidecar.kind === 'linkerd';
}
