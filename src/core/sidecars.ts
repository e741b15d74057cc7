// Sidecar rules: which containers are mesh proxies or helpers that must
// outlive the app, and what each one needs to know about them.

import { parse as parseYaml } from 'yaml';
import { ForeignAnnotation } from './annotations.ts';
import { isRecord, type Container, type PodLike } from './types.ts';

type SidecarKind = 'istio' | 'linkerd' | 'helper';

export interface Sidecar {
  name: string;
  kind: SidecarKind;
  /** An init container with restartPolicy Always: Kubernetes orders it. */
  native: boolean;
  /** The image has no shell. */
  distroless: boolean;
  /** Owner uid of the proxy's own sockets; null when unknown. */
  uid: number | null;
  /** Seconds it keeps serving new and in-flight requests after SIGTERM. */
  drainSeconds: number;
  /** Seconds it needs after SIGTERM to stop cleanly: what the grace period leaves it. */
  shutdownSeconds: number;
  /**
   * Istio native: its own preStop starts an inbound drain at t=0, and its
   * listeners accept new connections until this many seconds later.
   */
  drainDurationSeconds: number | null;
  /** Istio minor version read from the image tag, when there is one. */
  istioMinor: number | null;
}

export const ISTIO_PROXY = 'istio-proxy';
export const LINKERD_PROXY = 'linkerd-proxy';
const LINKERD_INJECT = 'linkerd.io/inject';
/** Where Istio's injector renders meshConfig.defaultConfig, as JSON. */
export const ISTIO_PROXY_CONFIG_ENV = 'PROXY_CONFIG';
export const ISTIO_UID = 1337;
const LINKERD_UID = 2102;
/** pilot-agent's defaults: terminationDrainDuration and drainDuration. */
export const ISTIO_TERMINATION_DRAIN_SECONDS = 5;
const ISTIO_DRAIN_DURATION_SECONDS = 45;
/**
 * What the grace period leaves a held sidecar after its hold: Linkerd's
 * proxy refuses new requests at SIGTERM and finishes those in flight, a log
 * shipper flushes. Without it the kubelet gives a hold that used up the
 * grace period only its 2 s minimum.
 */
export const SIDECAR_SHUTDOWN_SECONDS = 5;
/** Longest drain read from a proxy config: an hour, as the annotation bounds allow. */
const MAX_DRAIN_SECONDS = 3600;

/** Image name parts of bases that ship no shell and no sleep, besides "distroless". */
export const SHELL_LESS_IMAGE_PATTERNS: readonly string[] = [
  'distroless',
  // Chainguard's images have no shell but in their -dev variants.
  'cgr.dev/chainguard/',
  // Kubernetes' own images built FROM scratch or distroless static.
  'registry.k8s.io/pause',
  'registry.k8s.io/coredns/',
  'registry.k8s.io/metrics-server/',
  'registry.k8s.io/kube-state-metrics/',
];

function isNativeSidecar(container: Container): boolean {
  return container.restartPolicy === 'Always';
}

function imageTag(image: unknown): string {
  if (typeof image !== 'string') return '';
  const withoutDigest = image.split('@')[0] ?? '';
  const lastSlash = withoutDigest.lastIndexOf('/');
  const colon = withoutDigest.indexOf(':', lastSlash + 1);
  return colon === -1 ? '' : withoutDigest.slice(colon + 1);
}

/** True for images that ship no shell and no sleep: the built-in patterns and the configured ones. */
export function isDistrolessImage(image: unknown, patterns: readonly string[]): boolean {
  if (typeof image !== 'string') return false;
  const lower = image.toLowerCase();
  return [...SHELL_LESS_IMAGE_PATTERNS, ...patterns].some((p) => p !== '' && lower.includes(p));
}

function istioMinorFromImage(image: unknown): number | null {
  const match = /^(\d+)\.(\d+)/.exec(imageTag(image));
  if (match === null || match[1] !== '1') return null;
  return Number(match[2]);
}

const DURATION_PART = /(\d+(?:\.\d+)?)(ms|s|m|h)/y;
const UNIT_SECONDS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600 };

/** Parses a Go or protobuf-JSON duration such as "5s", "1m30s", "2.5s" or "2500ms", rounded up. */
export function parseGoDurationSeconds(text: string): number | null {
  const trimmed = text.trim();
  let seconds = 0;
  DURATION_PART.lastIndex = 0;
  while (DURATION_PART.lastIndex < trimmed.length) {
    const part = DURATION_PART.exec(trimmed);
    if (part === null) return null;
    seconds += Number(part[1]) * UNIT_SECONDS[part[2]!]!;
  }
  return trimmed === '' ? null : Math.ceil(seconds);
}

interface IstioDrains {
  terminationDrainSeconds?: number;
  drainDurationSeconds?: number;
}

/** The two drain settings of one proxy config document (YAML or JSON); unreadable is empty. */
function drainsOf(text: unknown): IstioDrains {
  if (typeof text !== 'string') return {};
  let config: unknown;
  try {
    // PROXY_CONFIG, on every Istio pod, is JSON: read it as such. The
    // annotation is usually YAML, which takes a full YAML parser.
    config = text.trimStart().startsWith('{') ? JSON.parse(text) : parseYaml(text);
  } catch {
    try {
      config = parseYaml(text);
    } catch {
      return {};
    }
  }
  if (!isRecord(config)) return {};
  const seconds = (value: unknown) =>
    typeof value === 'string' ? parseGoDurationSeconds(value) : null;
  const drains: IstioDrains = {};
  const termination = seconds(config['terminationDrainDuration']);
  if (termination !== null)
    drains.terminationDrainSeconds = Math.min(termination, MAX_DRAIN_SECONDS);
  const drain = seconds(config['drainDuration']);
  if (drain !== null) drains.drainDurationSeconds = Math.min(drain, MAX_DRAIN_SECONDS);
  return drains;
}

/**
 * The proxy's drains as pilot-agent resolves them: its defaults, then the
 * mesh-wide defaultConfig (rendered into PROXY_CONFIG), then the pod's
 * proxy.istio.io/config annotation on top.
 */
function istioDrains(pod: PodLike, proxy: Container): Required<IstioDrains> {
  const env = Array.isArray(proxy.env) ? proxy.env : [];
  const meshWide = env.find((v) => isRecord(v) && v.name === ISTIO_PROXY_CONFIG_ENV);
  const annotations = pod.metadata?.annotations;
  const podConfig = isRecord(annotations)
    ? annotations[ForeignAnnotation.istioProxyConfig]
    : undefined;
  return {
    terminationDrainSeconds: ISTIO_TERMINATION_DRAIN_SECONDS,
    drainDurationSeconds: ISTIO_DRAIN_DURATION_SECONDS,
    ...drainsOf(meshWide?.value),
    ...drainsOf(podConfig),
  };
}

/** The uid a container runs as, from its own securityContext or the pod's; null when unset. */
export function runAsUserOf(pod: PodLike, container: Container): number | null {
  const own = container.securityContext?.runAsUser;
  if (typeof own === 'number') return own;
  const podContext = pod.spec['securityContext'];
  const podUid = isRecord(podContext) ? podContext['runAsUser'] : undefined;
  return typeof podUid === 'number' ? podUid : null;
}

export interface SidecarConfig {
  distrolessPatterns: readonly string[];
  /** Names of other long-lived helpers that must outlive the app. */
  helperSidecars: readonly string[];
}

/** Every container that is not an app container, in the order found. */
export function findSidecars(pod: PodLike, config: SidecarConfig): Sidecar[] {
  const found: Sidecar[] = [];
  const regular = pod.spec.containers.filter(isRecord);
  const consider = (container: Container, native: boolean) => {
    const base = {
      name: container.name,
      native,
      distroless: isDistrolessImage(container.image, config.distrolessPatterns),
      drainDurationSeconds: null,
      istioMinor: null,
    };
    const uidOr = (fallback: number) => runAsUserOf(pod, container) ?? fallback;
    if (container.name === ISTIO_PROXY) {
      // A gateway, or ztunnel, is an istio-proxy with nothing beside it: the workload itself.
      if (!native && regular.length === 1) return;
      const drains = istioDrains(pod, container);
      found.push({
        ...base,
        kind: 'istio',
        uid: uidOr(ISTIO_UID),
        drainSeconds: drains.terminationDrainSeconds,
        // pilot-agent exits at once on SIGTERM after its native drain.
        shutdownSeconds: native ? 0 : drains.terminationDrainSeconds,
        drainDurationSeconds: native ? drains.drainDurationSeconds : null,
        istioMinor: istioMinorFromImage(container.image),
      });
    } else if (container.name === LINKERD_PROXY) {
      found.push({
        ...base,
        kind: 'linkerd',
        uid: uidOr(LINKERD_UID),
        // It refuses new requests at SIGTERM.
        drainSeconds: 0,
        shutdownSeconds: SIDECAR_SHUTDOWN_SECONDS,
      });
    } else if (config.helperSidecars.includes(container.name)) {
      found.push({
        ...base,
        kind: 'helper',
        uid: runAsUserOf(pod, container),
        drainSeconds: 0,
        shutdownSeconds: SIDECAR_SHUTDOWN_SECONDS,
      });
    }
  };
  for (const container of pod.spec.initContainers ?? []) {
    if (isRecord(container) && isNativeSidecar(container)) consider(container, true);
  }
  for (const container of regular) consider(container, false);
  return found;
}

export function isMeshProxy(sidecar: Sidecar): boolean {
  return sidecar.kind === 'istio' || sidecar.kind === 'linkerd';
}

export interface NamespaceMetadata {
  labels?: unknown;
  annotations?: unknown;
}

function stringAt(map: unknown, key: string): string | undefined {
  if (!isRecord(map)) return undefined;
  const value = map[key];
  return typeof value === 'string' ? value : undefined;
}

/**
 * The mesh whose injector will add a proxy to this pod when it is admitted,
 * where the pod has none yet: Istio (namespace label istio-injection or
 * istio.io/rev, or the pod's sidecar.istio.io/inject) or Linkerd
 * (linkerd.io/inject on the pod or its namespace). Offline, that proxy is
 * not there to be ordered; the webhook orders it at admission.
 */
export function meshAddedAtAdmission(
  pod: PodLike,
  namespace: NamespaceMetadata = {},
): { mesh: 'istio' | 'linkerd'; why: string } | null {
  const names = new Set(
    [...(pod.spec.initContainers ?? []), ...pod.spec.containers]
      .filter(isRecord)
      .map((c) => c.name),
  );
  const metadata = pod.metadata;
  const podSays = (key: string) =>
    stringAt(metadata?.labels, key) ?? stringAt(metadata?.annotations, key);
  const istioPod = podSays(ForeignAnnotation.istioInject);
  if (!names.has(ISTIO_PROXY) && istioPod !== 'false') {
    if (istioPod === 'true')
      return { mesh: 'istio', why: `${ForeignAnnotation.istioInject}: "true"` };
    if (stringAt(namespace.labels, 'istio-injection') === 'enabled') {
      return { mesh: 'istio', why: 'namespace label istio-injection=enabled' };
    }
    const revision = stringAt(namespace.labels, 'istio.io/rev');
    if (revision !== undefined && stringAt(namespace.labels, 'istio-injection') !== 'disabled') {
      return { mesh: 'istio', why: `namespace label istio.io/rev=${revision}` };
    }
  }
  const linkerdPod = stringAt(metadata?.annotations, LINKERD_INJECT);
  if (!names.has(LINKERD_PROXY) && linkerdPod !== 'disabled') {
    if (linkerdPod === 'enabled') return { mesh: 'linkerd', why: `${LINKERD_INJECT}: enabled` };
    if (stringAt(namespace.annotations, LINKERD_INJECT) === 'enabled') {
      return { mesh: 'linkerd', why: `namespace annotation ${LINKERD_INJECT}: enabled` };
    }
  }
  return null;
}
