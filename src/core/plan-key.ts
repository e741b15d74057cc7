// What a pod's admission depends on, written as one string. Two pods with the
// same key get the same plan, the same patch (operation for operation) and
// the same warnings, so the webhook can answer the second from the first.
// Replicas of one Deployment differ only in what is left out here (name, uid,
// labels, volumes, probes, most env), so a rollout plans each template once.
//
// The key holds every field the planner and the diff read, and nothing else;
// test/unit/plan-key.test.ts changes random fields of random pods and checks
// that whenever the key stays the same, so does the answer. A pod of an odd
// shape (a value of an unexpected type anywhere the planner looks) has no key
// and is planned afresh: such pods are rare and best not reasoned about here.

import { Annotation, ANNOTATION_PREFIX, ForeignAnnotation } from './annotations.ts';
import type { Capabilities } from './capabilities.ts';
import { EXIT_ON_ZERO_ENV } from './planner.ts';
import { SETTING_SPECS } from './policy.ts';
import { ISTIO_DRAIN_ENV, ISTIO_PROXY } from './sidecars.ts';
import { isRecord } from './types.ts';

/** Longer keys are not worth keeping: a pod that large is better planned again. */
export const MAX_KEY_LENGTH = 16 * 1024;

const SETTING_KEYS = Object.values(SETTING_SPECS).map((spec) => spec.key);

// Every piece is self-delimiting (a tag, or a length before the text), so
// two different pods cannot write the same key.
const str = (text: string) => `${text.length}:${text}`;
const optionalStr = (value: string | undefined) => (value === undefined ? '~' : str(value));

/** settingsKey of annotations that hold none of the settings. */
const NO_SETTINGS = `+${'~'.repeat(SETTING_KEYS.length)}`;

/** The setting annotations of a pod or namespace; null if one is not a string. */
export function settingsKey(annotations: unknown): string | null {
  if (annotations === undefined) return '-';
  if (!isRecord(annotations)) return null;
  let key = '+';
  for (const name of SETTING_KEYS) {
    const value = annotations[name];
    if (value === undefined) key += '~';
    else if (typeof value === 'string') key += str(value);
    else return null;
  }
  return key;
}

/** Whether `first` comes before `second` among the object's keys (both are there). */
function comesBefore(object: Record<string, unknown>, first: string, second: string): boolean {
  for (const key in object) {
    if (key === first) return true;
    if (key === second) return false;
  }
  return false;
}

function istioEnvKey(container: Record<string, unknown>): string | null {
  const env = container['env'];
  if (env === undefined) return 'e~';
  if (!Array.isArray(env)) return null;
  // The patch appends at the list's end; the planner reads two variables.
  let key = `e${env.length};`;
  for (const variable of env) {
    if (!isRecord(variable)) return null;
    const { name, value } = variable;
    if (name === ISTIO_DRAIN_ENV) {
      if (value !== undefined && typeof value !== 'string') return null;
      key += `d${optionalStr(value)}`;
    } else if (name === EXIT_ON_ZERO_ENV) {
      key += 'x';
    }
  }
  // Which of two keys the patch touches first follows their order.
  if (isRecord(container['lifecycle']))
    key += comesBefore(container, 'lifecycle', 'env') ? '<' : '>';
  return key;
}

function containerKey(container: unknown): string | null {
  if (!isRecord(container)) return null;
  const { name, image, restartPolicy, lifecycle, securityContext } = container;
  if (typeof name !== 'string') return null;
  if (image !== undefined && typeof image !== 'string') return null;
  if (restartPolicy !== undefined && typeof restartPolicy !== 'string') return null;
  if (lifecycle !== undefined && !isRecord(lifecycle)) return null;
  if (securityContext !== undefined && !isRecord(securityContext)) return null;
  // As the sidecar rules read it: anything but a number is no uid.
  const runAsUser = securityContext?.['runAsUser'];
  let key = `${str(name)}${optionalStr(image)}${optionalStr(restartPolicy)}`;
  key += typeof runAsUser === 'number' ? `u${runAsUser};` : 'u~';
  // Small, and whether a hook is kept, added beside others or made whole depends on it.
  key += lifecycle === undefined ? 'l~' : `l${str(JSON.stringify(lifecycle))}`;
  if (name === ISTIO_PROXY) {
    const env = istioEnvKey(container);
    if (env === null) return null;
    key += env;
  }
  return key;
}

function containersKey(list: unknown): string | null {
  if (list === undefined) return '~';
  if (!Array.isArray(list)) return null;
  let key = '[';
  for (const container of list) {
    const part = containerKey(container);
    if (part === null) return null;
    key += part;
  }
  return key;
}

/**
 * The pod's part of the key, or null when it has none: an odd shape, or an
 * earlier pass to undo (a reinvocation, rare and planned afresh).
 */
export function podKey(pod: unknown): string | null {
  if (!isRecord(pod)) return null;
  const { metadata, spec } = pod;
  if (!isRecord(spec)) return null;
  if (metadata !== undefined && !isRecord(metadata)) return null;
  const annotations = metadata?.['annotations'];
  let settings: string | null = annotations === undefined ? '-' : null;
  let istioConfig: unknown;
  if (isRecord(annotations)) {
    // One pass over the keys: most pods carry none of this project's.
    let ours = false;
    for (const name in annotations) {
      if (name.startsWith(ANNOTATION_PREFIX)) ours = true;
      else if (name === ForeignAnnotation.istioProxyConfig) istioConfig = annotations[name];
    }
    if (ours) {
      if (annotations[Annotation.status] !== undefined) return null;
      settings = settingsKey(annotations);
    } else {
      settings = NO_SETTINGS;
    }
  }
  if (settings === null) return null;
  if (istioConfig !== undefined && typeof istioConfig !== 'string') return null;

  const { restartPolicy, terminationGracePeriodSeconds: grace } = spec;
  if (restartPolicy !== undefined && typeof restartPolicy !== 'string') return null;
  if (grace !== undefined && typeof grace !== 'number') return null;
  if (!Array.isArray(spec['containers'])) return null;
  const init = containersKey(spec['initContainers']);
  const main = init === null ? null : containersKey(spec['containers']);
  if (main === null) return null;

  // Absent annotations and empty ones patch differently; settingsKey tells them apart.
  let key = metadata === undefined ? 'm~' : comesBefore(pod, 'metadata', 'spec') ? 'm<' : 'm>';
  key += settings + optionalStr(istioConfig) + optionalStr(restartPolicy as string | undefined);
  key += spec['hostNetwork'] === true ? 'H' : 'h';
  if (grace === undefined) key += 'g~';
  else
    key += `g${grace};${comesBefore(spec, 'containers', 'terminationGracePeriodSeconds') ? '<' : '>'}`;
  key += init + main;
  return key.length > MAX_KEY_LENGTH ? null : key;
}

/**
 * The whole key of an admission: what the planner reads of the cluster's
 * capabilities, the namespace's settings and the pod's part. Null: plan afresh.
 */
export function planKey(
  pod: unknown,
  namespaceAnnotations: unknown,
  capabilities: Capabilities,
): string | null {
  const podPart = podKey(pod);
  if (podPart === null) return null;
  const namespacePart = settingsKey(namespaceAnnotations);
  if (namespacePart === null) return null;
  return (capabilities.sleepAction ? 'S' : 's') + namespacePart + podPart;
}
