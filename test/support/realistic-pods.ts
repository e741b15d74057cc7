// Realistic pods as an API server sends them for admission: a plain pod,
// an Istio pod with the classic (non-native) sidecar, and a pod that opted
// out; and the AdmissionReview around one. The benchmark loads these, and
// the unit tests plan them.

import { Annotation } from '../../src/core/annotations.ts';
import type { Container, PodLike } from '../../src/core/types.ts';

const NAMESPACE = 'shop';

function appContainer(name: string, image: string): Container {
  return {
    name,
    image,
    imagePullPolicy: 'IfNotPresent',
    ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }],
    env: [
      { name: 'LOG_LEVEL', value: 'info' },
      { name: 'PORT', value: '8080' },
    ],
    resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '256Mi' } },
    readinessProbe: {
      httpGet: { path: '/ready', port: 8080, scheme: 'HTTP' },
      periodSeconds: 5,
      timeoutSeconds: 1,
      successThreshold: 1,
      failureThreshold: 3,
    },
    volumeMounts: [
      {
        name: 'kube-api-access-7xk2p',
        readOnly: true,
        mountPath: '/var/run/secrets/kubernetes.io/serviceaccount',
      },
    ],
    terminationMessagePath: '/dev/termination-log',
    terminationMessagePolicy: 'File',
  } as Container;
}

function serviceAccountVolume() {
  return {
    name: 'kube-api-access-7xk2p',
    projected: {
      defaultMode: 420,
      sources: [
        { serviceAccountToken: { expirationSeconds: 3607, path: 'token' } },
        { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
        {
          downwardAPI: {
            items: [
              {
                path: 'namespace',
                fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' },
              },
            ],
          },
        },
      ],
    },
  };
}

function podSpecBase(containers: Container[]) {
  return {
    containers,
    restartPolicy: 'Always',
    terminationGracePeriodSeconds: 30,
    dnsPolicy: 'ClusterFirst',
    serviceAccountName: 'checkout',
    securityContext: { runAsNonRoot: true, fsGroup: 2000 },
    schedulerName: 'default-scheduler',
    enableServiceLinks: true,
    preemptionPolicy: 'PreemptLowerPriority',
    priority: 0,
    tolerations: [
      {
        key: 'node.kubernetes.io/not-ready',
        operator: 'Exists',
        effect: 'NoExecute',
        tolerationSeconds: 300,
      },
      {
        key: 'node.kubernetes.io/unreachable',
        operator: 'Exists',
        effect: 'NoExecute',
        tolerationSeconds: 300,
      },
    ],
    volumes: [serviceAccountVolume()],
  };
}

function metadata(generateName: string, annotations: Record<string, string> = {}) {
  return {
    generateName,
    namespace: NAMESPACE,
    labels: { app: 'checkout', 'pod-template-hash': '7d9f8b6c5d', version: 'v3' },
    annotations: { 'kubectl.kubernetes.io/restartedAt': '2025-06-01T10:00:00Z', ...annotations },
    ownerReferences: [
      {
        apiVersion: 'apps/v1',
        kind: 'ReplicaSet',
        name: generateName.replace(/-$/, ''),
        uid: '5b0d2c7e-8a41-4f7e-9b1d-2f6c3e8a9d10',
        controller: true,
        blockOwnerDeletion: true,
      },
    ],
  };
}

export function plainPod(): PodLike {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: metadata('checkout-7d9f8b6c5d-'),
    spec: podSpecBase([appContainer('checkout', 'registry.example.com/shop/checkout:3.4.1')]),
  } as PodLike;
}

export function optedOutPod(): PodLike {
  const pod = plainPod();
  pod.metadata!.annotations![Annotation.inject] = 'disabled';
  return pod;
}

const ISTIO_IMAGE = 'docker.io/istio/proxyv2:1.22.3';

function istioEnv() {
  const fieldRef = (fieldPath: string) => ({
    valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath } },
  });
  return [
    { name: 'PILOT_CERT_PROVIDER', value: 'istiod' },
    { name: 'CA_ADDR', value: 'istiod.istio-system.svc:15012' },
    { name: 'POD_NAME', ...fieldRef('metadata.name') },
    { name: 'POD_NAMESPACE', ...fieldRef('metadata.namespace') },
    { name: 'INSTANCE_IP', ...fieldRef('status.podIP') },
    { name: 'SERVICE_ACCOUNT', ...fieldRef('spec.serviceAccountName') },
    { name: 'HOST_IP', ...fieldRef('status.hostIP') },
    {
      name: 'ISTIO_CPU_LIMIT',
      valueFrom: { resourceFieldRef: { divisor: '0', resource: 'limits.cpu' } },
    },
    {
      name: 'PROXY_CONFIG',
      value: '{"holdApplicationUntilProxyStarts":false,"terminationDrainDuration":"5s"}\n',
    },
    {
      name: 'ISTIO_META_POD_PORTS',
      value: '[\n    {"name":"http","containerPort":8080,"protocol":"TCP"}\n]',
    },
    { name: 'ISTIO_META_APP_CONTAINERS', value: 'checkout' },
    {
      name: 'GOMEMLIMIT',
      valueFrom: { resourceFieldRef: { divisor: '0', resource: 'limits.memory' } },
    },
    {
      name: 'GOMAXPROCS',
      valueFrom: { resourceFieldRef: { divisor: '0', resource: 'limits.cpu' } },
    },
    { name: 'ISTIO_META_CLUSTER_ID', value: 'Kubernetes' },
    { name: 'ISTIO_META_NODE_NAME', ...fieldRef('spec.nodeName') },
    { name: 'ISTIO_META_INTERCEPTION_MODE', value: 'REDIRECT' },
    { name: 'ISTIO_META_WORKLOAD_NAME', value: 'checkout' },
    {
      name: 'ISTIO_META_OWNER',
      value: 'kubernetes://apis/apps/v1/namespaces/shop/deployments/checkout',
    },
    { name: 'ISTIO_META_MESH_ID', value: 'cluster.local' },
    {
      name: 'ISTIO_KUBE_APP_PROBERS',
      value:
        '{"/app-health/checkout/readyz":{"httpGet":{"path":"/ready","port":8080,"scheme":"HTTP"},"timeoutSeconds":1}}',
    },
    { name: 'ISTIO_META_REQUESTED_NETWORK_VIEW', value: '' },
    { name: 'ISTIO_META_DNS_CAPTURE', value: 'true' },
    { name: 'ISTIO_META_DNS_AUTO_ALLOCATE', value: 'true' },
    { name: 'TRUST_DOMAIN', value: 'cluster.local' },
  ];
}

function istioProxy(): Container {
  return {
    name: 'istio-proxy',
    image: ISTIO_IMAGE,
    args: [
      'proxy',
      'sidecar',
      '--domain',
      '$(POD_NAMESPACE).svc.cluster.local',
      '--proxyLogLevel=warning',
      '--proxyComponentLogLevel=misc:error',
      '--log_output_level=default:info',
    ],
    ports: [{ name: 'http-envoy-prom', containerPort: 15090, protocol: 'TCP' }],
    env: istioEnv(),
    resources: {
      limits: { cpu: '2', memory: '1Gi' },
      requests: { cpu: '100m', memory: '128Mi' },
    },
    readinessProbe: {
      httpGet: { path: '/healthz/ready', port: 15021, scheme: 'HTTP' },
      periodSeconds: 15,
      timeoutSeconds: 3,
      successThreshold: 1,
      failureThreshold: 4,
    },
    startupProbe: {
      httpGet: { path: '/healthz/ready', port: 15021, scheme: 'HTTP' },
      periodSeconds: 1,
      timeoutSeconds: 3,
      successThreshold: 1,
      failureThreshold: 600,
    },
    securityContext: {
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
      privileged: false,
      readOnlyRootFilesystem: true,
      runAsGroup: 1337,
      runAsNonRoot: true,
      runAsUser: 1337,
    },
    volumeMounts: [
      { name: 'workload-socket', mountPath: '/var/run/secrets/workload-spiffe-uds' },
      { name: 'credential-socket', mountPath: '/var/run/secrets/credential-uds' },
      { name: 'workload-certs', mountPath: '/var/run/secrets/workload-spiffe-credentials' },
      { name: 'istiod-ca-cert', mountPath: '/var/run/secrets/istio' },
      { name: 'istio-data', mountPath: '/var/lib/istio/data' },
      { name: 'istio-envoy', mountPath: '/etc/istio/proxy' },
      { name: 'istio-token', mountPath: '/var/run/secrets/tokens' },
      { name: 'istio-podinfo', mountPath: '/etc/istio/pod' },
      {
        name: 'kube-api-access-7xk2p',
        readOnly: true,
        mountPath: '/var/run/secrets/kubernetes.io/serviceaccount',
      },
    ],
    terminationMessagePath: '/dev/termination-log',
    terminationMessagePolicy: 'File',
    imagePullPolicy: 'IfNotPresent',
  } as Container;
}

function istioInit(): Container {
  return {
    name: 'istio-init',
    image: ISTIO_IMAGE,
    args: [
      'istio-iptables',
      '-p',
      '15001',
      '-z',
      '15006',
      '-u',
      '1337',
      '-m',
      'REDIRECT',
      '-i',
      '*',
      '-x',
      '',
      '-b',
      '*',
      '-d',
      '15090,15021,15020',
      '--log_output_level=default:info',
    ],
    resources: {
      limits: { cpu: '2', memory: '1Gi' },
      requests: { cpu: '100m', memory: '128Mi' },
    },
    securityContext: {
      allowPrivilegeEscalation: false,
      capabilities: { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] },
      privileged: false,
      readOnlyRootFilesystem: false,
      runAsGroup: 0,
      runAsNonRoot: false,
      runAsUser: 0,
    },
    terminationMessagePath: '/dev/termination-log',
    terminationMessagePolicy: 'File',
    imagePullPolicy: 'IfNotPresent',
  } as Container;
}

const ISTIO_STATUS = JSON.stringify({
  initContainers: ['istio-init'],
  containers: ['istio-proxy'],
  volumes: [
    'workload-socket',
    'credential-socket',
    'workload-certs',
    'istio-envoy',
    'istio-data',
    'istio-podinfo',
    'istio-token',
    'istiod-ca-cert',
  ],
  imagePullSecrets: null,
  revision: 'default',
});

function istioVolumes() {
  const podinfo = (path: string, fieldPath: string) => ({
    path,
    fieldRef: { apiVersion: 'v1', fieldPath },
  });
  return [
    { name: 'workload-socket', emptyDir: {} },
    { name: 'credential-socket', emptyDir: {} },
    { name: 'workload-certs', emptyDir: {} },
    { name: 'istio-envoy', emptyDir: { medium: 'Memory' } },
    { name: 'istio-data', emptyDir: {} },
    {
      name: 'istio-podinfo',
      downwardAPI: {
        defaultMode: 420,
        items: [
          podinfo('labels', 'metadata.labels'),
          podinfo('annotations', 'metadata.annotations'),
        ],
      },
    },
    {
      name: 'istio-token',
      projected: {
        defaultMode: 420,
        sources: [
          {
            serviceAccountToken: {
              audience: 'istio-ca',
              expirationSeconds: 43200,
              path: 'istio-token',
            },
          },
        ],
      },
    },
    { name: 'istiod-ca-cert', configMap: { defaultMode: 420, name: 'istio-ca-root-cert' } },
  ];
}

/** An app with Istio's classic sidecar injected, as the API server sees it after Istio's webhook. */
export function istioPod(): PodLike {
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: metadata('checkout-7d9f8b6c5d-', {
      'istio.io/rev': 'default',
      'kubectl.kubernetes.io/default-container': 'checkout',
      'kubectl.kubernetes.io/default-logs-container': 'checkout',
      'prometheus.io/path': '/stats/prometheus',
      'prometheus.io/port': '15020',
      'prometheus.io/scrape': 'true',
      'sidecar.istio.io/status': ISTIO_STATUS,
      'sidecar.istio.io/interceptionMode': 'REDIRECT',
      'proxy.istio.io/config':
        '{"terminationDrainDuration":"5s","holdApplicationUntilProxyStarts":false}',
      'traffic.sidecar.istio.io/excludeInboundPorts': '15020',
      'traffic.sidecar.istio.io/includeInboundPorts': '*',
      'traffic.sidecar.istio.io/includeOutboundIPRanges': '*',
    }),
    spec: podSpecBase([
      appContainer('checkout', 'registry.example.com/shop/checkout:3.4.1'),
      istioProxy(),
    ]),
  } as PodLike;
  (pod.metadata as Record<string, unknown>)['managedFields'] = [
    {
      manager: 'kube-controller-manager',
      operation: 'Update',
      apiVersion: 'v1',
      time: '2025-06-01T10:00:02Z',
      fieldsType: 'FieldsV1',
      fieldsV1: {
        'f:metadata': {
          'f:annotations': { '.': {}, 'f:kubectl.kubernetes.io/restartedAt': {} },
          'f:generateName': {},
          'f:labels': { '.': {}, 'f:app': {}, 'f:pod-template-hash': {}, 'f:version': {} },
          'f:ownerReferences': { '.': {}, 'k:{"uid":"5b0d2c7e-8a41-4f7e-9b1d-2f6c3e8a9d10"}': {} },
        },
        'f:spec': {
          'f:containers': {
            'k:{"name":"checkout"}': {
              '.': {},
              'f:env': { '.': {}, 'k:{"name":"LOG_LEVEL"}': {}, 'k:{"name":"PORT"}': {} },
              'f:image': {},
              'f:imagePullPolicy': {},
              'f:name': {},
              'f:ports': { '.': {}, 'k:{"containerPort":8080,"protocol":"TCP"}': {} },
              'f:readinessProbe': { '.': {}, 'f:httpGet': {}, 'f:periodSeconds': {} },
              'f:resources': { '.': {}, 'f:limits': {}, 'f:requests': {} },
            },
          },
          'f:dnsPolicy': {},
          'f:restartPolicy': {},
          'f:securityContext': { '.': {}, 'f:fsGroup': {}, 'f:runAsNonRoot': {} },
          'f:serviceAccountName': {},
          'f:terminationGracePeriodSeconds': {},
        },
      },
    },
  ];
  Object.assign(pod.metadata!.labels!, {
    'security.istio.io/tlsMode': 'istio',
    'service.istio.io/canonical-name': 'checkout',
    'service.istio.io/canonical-revision': 'v3',
  });
  pod.spec.initContainers = [istioInit()];
  (pod.spec as unknown as { volumes: unknown[] }).volumes.push(...istioVolumes());
  return pod;
}

let uidCounter = 0;

/** The AdmissionReview an API server sends on pod CREATE. */
export function admissionReview(object: PodLike): string {
  uidCounter++;
  return JSON.stringify({
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: `3f8e2a1c-9b7d-4e5f-8a6b-${String(uidCounter).padStart(12, '0')}`,
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      requestKind: { group: '', version: 'v1', kind: 'Pod' },
      requestResource: { group: '', version: 'v1', resource: 'pods' },
      namespace: NAMESPACE,
      operation: 'CREATE',
      userInfo: {
        username: 'system:serviceaccount:kube-system:replicaset-controller',
        uid: '0c1f8e4a-2d3b-4c5d-9e6f-7a8b9c0d1e2f',
        groups: [
          'system:serviceaccounts',
          'system:serviceaccounts:kube-system',
          'system:authenticated',
        ],
      },
      object,
      oldObject: null,
      dryRun: false,
      options: { kind: 'CreateOptions', apiVersion: 'meta.k8s.io/v1' },
    },
  });
}
