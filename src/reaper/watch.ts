// Pods and EndpointSlices of the whole cluster (a node's real servers point
// at pods anywhere), kept by the webhook's watched lists (watched-list.ts):
// restarted after errors, after silence, and relisted in full. Only the
// facts the address book needs are kept of each object.

import {
  CoreV1Api,
  DiscoveryV1Api,
  type KubeConfig,
  type V1EndpointSlice,
  type V1Pod,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { AddressBook, EndpointFacts, PodFacts } from './address-book.ts';
import {
  DEFAULT_TIMINGS,
  watchedList,
  type CacheStats,
  type ClusterTimings,
} from '../cluster/watched-list.ts';

export function podFacts(pod: V1Pod): PodFacts | null {
  const { namespace, name } = pod.metadata ?? {};
  if (namespace === undefined || name === undefined) return null;
  const addresses = new Set<string>();
  for (const entry of pod.status?.podIPs ?? []) if (entry.ip) addresses.add(entry.ip);
  if (pod.status?.podIP) addresses.add(pod.status.podIP);
  const phase = pod.status?.phase;
  return {
    key: `${namespace}/${name}`,
    addresses: [...addresses],
    terminating: pod.metadata?.deletionTimestamp != null,
    finished: phase === 'Succeeded' || phase === 'Failed',
    hostNetwork: pod.spec?.hostNetwork === true,
  };
}

export function sliceKey(slice: V1EndpointSlice): string | null {
  const { namespace, name } = slice.metadata ?? {};
  return namespace === undefined || name === undefined ? null : `${namespace}/${name}`;
}

export function endpointFacts(slice: V1EndpointSlice): EndpointFacts[] {
  const namespace = slice.metadata?.namespace;
  return (slice.endpoints ?? []).map((endpoint) => {
    const ref = endpoint.targetRef;
    const podNamespace = ref?.namespace ?? namespace;
    return {
      addresses: endpoint.addresses,
      terminating: endpoint.conditions?.terminating === true,
      ...(ref?.kind === 'Pod' && ref.name && podNamespace
        ? { pod: `${podNamespace}/${ref.name}` }
        : {}),
    };
  });
}

export interface ClusterWatch {
  /** Both lists have arrived once. */
  synced(): boolean;
  stats(): { pods: CacheStats; endpointSlices: CacheStats };
  stop(): Promise<void>;
}

export function watchCluster(options: {
  kc: KubeConfig;
  book: AddressBook;
  logger: Logger;
  /** A pod or an endpoint went away, or a list replaced the cache: time to look again. */
  onRemoval(): void;
  timings?: ClusterTimings;
}): ClusterWatch {
  const { kc, book, logger, onRemoval } = options;
  const timings = options.timings ?? DEFAULT_TIMINGS;
  const core = kc.makeApiClient(CoreV1Api);
  const discovery = kc.makeApiClient(DiscoveryV1Api);
  const noteRequest = () => {};

  const pods = watchedList<V1Pod>({
    kc,
    path: '/api/v1/pods',
    what: 'pod',
    list: () => core.listPodForAllNamespaces(),
    replaceAll(items) {
      book.replacePods(items.map(podFacts).filter((f): f is PodFacts => f !== null));
      onRemoval();
    },
    upsert(pod) {
      const facts = podFacts(pod);
      if (facts === null) return;
      book.upsertPod(facts);
      if (facts.finished) onRemoval();
    },
    remove(pod) {
      const facts = podFacts(pod);
      if (facts === null) return;
      book.removePod(facts.key);
      onRemoval();
    },
    timings,
    logger,
    onRequest: noteRequest,
  });

  const slices = watchedList<V1EndpointSlice>({
    kc,
    path: '/apis/discovery.k8s.io/v1/endpointslices',
    what: 'endpointslice',
    list: () => discovery.listEndpointSliceForAllNamespaces(),
    replaceAll(items) {
      const all = new Map<string, EndpointFacts[]>();
      for (const slice of items) {
        const key = sliceKey(slice);
        if (key !== null) all.set(key, endpointFacts(slice));
      }
      book.replaceSlices(all);
      onRemoval();
    },
    upsert(slice) {
      const key = sliceKey(slice);
      if (key === null) return;
      book.upsertSlice(key, endpointFacts(slice));
      // An endpoint leaving a slice may be the last word on a gone pod.
      onRemoval();
    },
    remove(slice) {
      const key = sliceKey(slice);
      if (key === null) return;
      book.removeSlice(key);
      onRemoval();
    },
    timings,
    logger,
    onRequest: noteRequest,
  });

  pods.start();
  slices.start();
  const silenceCheck = setInterval(() => {
    pods.checkSilence();
    slices.checkSilence();
  }, timings.staleCheckMs);
  silenceCheck.unref();

  return {
    synced: () => pods.stats().synced && slices.stats().synced,
    stats: () => ({ pods: pods.stats(), endpointSlices: slices.stats() }),
    async stop() {
      clearInterval(silenceCheck);
      await Promise.all([pods.stop(), slices.stop()]);
    },
  };
}
