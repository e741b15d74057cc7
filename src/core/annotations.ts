// The one table of user-facing annotation keys. Everything that reads or
// documents an annotation goes through here.

export const ANNOTATION_PREFIX = 'prestop-injector.io/';

export const Annotation = {
  inject: `${ANNOTATION_PREFIX}inject`,
  mode: `${ANNOTATION_PREFIX}mode`,
  delaySeconds: `${ANNOTATION_PREFIX}delay-seconds`,
  drainTimeoutSeconds: `${ANNOTATION_PREFIX}drain-timeout-seconds`,
  drainQuietSeconds: `${ANNOTATION_PREFIX}drain-quiet-seconds`,
  containers: `${ANNOTATION_PREFIX}containers`,
  sidecars: `${ANNOTATION_PREFIX}sidecars`,
  status: `${ANNOTATION_PREFIX}status`,
} as const;

/** Annotations written by others that change what a pod needs. */
export const ForeignAnnotation = {
  istioInject: 'sidecar.istio.io/inject',
  istioStatus: 'sidecar.istio.io/status',
  istioProxyConfig: 'proxy.istio.io/config',
} as const;
