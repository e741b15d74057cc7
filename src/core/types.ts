// Structural views of the few Pod fields the core reads and writes.
//
// These are deliberately loose: the pod is handled as the plain JSON object
// the API server sent, so fields this code has never heard of survive every
// mutation untouched. Never build a pod from these types; only look through them.

interface EnvVar {
  name: string;
  value?: string;
  [key: string]: unknown;
}

export interface LifecycleHandler {
  exec?: { command?: string[] };
  httpGet?: Record<string, unknown>;
  tcpSocket?: Record<string, unknown>;
  sleep?: { seconds: number };
  [key: string]: unknown;
}

export interface Container {
  name: string;
  image?: string;
  env?: EnvVar[];
  lifecycle?: { preStop?: LifecycleHandler; postStart?: LifecycleHandler; [key: string]: unknown };
  restartPolicy?: string;
  securityContext?: { runAsUser?: number; [key: string]: unknown };
  [key: string]: unknown;
}

interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  hostNetwork?: boolean;
  restartPolicy?: string;
  terminationGracePeriodSeconds?: number;
  [key: string]: unknown;
}

interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  [key: string]: unknown;
}

/** A Pod, or a pod template (which has the same metadata + spec shape). */
export interface PodLike {
  metadata?: ObjectMeta;
  spec: PodSpec;
  [key: string]: unknown;
}

export function isPodLike(value: unknown): value is PodLike {
  if (!isRecord(value)) return false;
  const spec = value['spec'];
  return isRecord(spec) && Array.isArray(spec['containers']);
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
