// The Helm chart, rendered and checked against a real kube-apiserver:
// helm lint; the schema's and the templates' error messages; renderings for
// several value sets (both certificate modes, custom selectors, old and new
// clusters), each validated by a server-side dry run; the server settings
// the Deployment sets, read back by the server's own config parser; Pod
// Security "restricted" enforcement; the self-signed certificates across
// real helm upgrades; the helm test pod's script.

import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildConfig, OPTIONS, readRawOptions, type OptionName } from '../../src/config.ts';
import {
  ensureTools,
  startControlPlane,
  startWebhook,
  type ControlPlane,
  type Tools,
} from '../support/control-plane.ts';
import {
  api,
  chartDir,
  createObject,
  findObject,
  helmTemplate,
  HelmError,
  IMAGE_VALUES,
  installCertManagerCrds,
  readObject,
  runCommand,
  scratchDir,
  setJsonArgs,
  toolEnvironment,
  type KubeObject,
} from '../support/chart.ts';
import { getFreePort } from '../support/free-port.ts';

const NAMESPACE = 'chart-render';
const RELEASE = 'prestop-injector';
const SERVER_VERSION = '1.37.2';

type Values = Record<string, unknown>;

/** Value sets every rendering check runs over. */
const VALUE_SETS: { name: string; kubeVersion: string; values: Values; certManager?: boolean }[] = [
  { name: 'defaults', kubeVersion: SERVER_VERSION, values: {} },
  { name: 'defaults on Kubernetes 1.29', kubeVersion: '1.29.0', values: {} },
  { name: 'defaults on Kubernetes 1.27', kubeVersion: '1.27.0', values: {} },
  {
    name: 'cert-manager, chart-made CA',
    kubeVersion: SERVER_VERSION,
    values: { 'certificates.mode': 'cert-manager' },
    certManager: true,
  },
  {
    name: 'cert-manager, existing ClusterIssuer',
    kubeVersion: SERVER_VERSION,
    values: {
      'certificates.mode': 'cert-manager',
      'certificates.certManager.issuerRef': {
        name: 'corp-ca',
        kind: 'ClusterIssuer',
        group: 'cert-manager.io',
      },
    },
    certManager: true,
  },
  {
    name: 'custom selectors',
    kubeVersion: SERVER_VERSION,
    values: {
      'webhook.namespaceSelector': {
        matchLabels: { team: 'payments' },
        matchExpressions: [{ key: 'env', operator: 'In', values: ['prod', 'staging'] }],
      },
      'webhook.objectSelector': {
        matchExpressions: [{ key: 'prestop-injector.io/skip', operator: 'DoesNotExist' }],
      },
      'webhook.excludeNamespaces': ['legacy', 'batch-jobs'],
      'webhook.matchConditions': [
        {
          name: 'not-static-pods',
          expression:
            "!has(object.metadata.annotations) || !('kubernetes.io/config.mirror' in object.metadata.annotations)",
        },
      ],
    },
  },
  {
    name: 'every setting changed',
    kubeVersion: SERVER_VERSION,
    values: {
      'config.injectDefault': 'enabled',
      'config.mode': 'drain',
      'config.delaySeconds': 25,
      'config.drainTimeoutSeconds': 90,
      'config.drainQuietSeconds': 7,
      'config.sidecars': 'disabled',
      'config.distrolessPatterns': ['chainguard', 'scratch'],
      'config.helperSidecars': ['vault-agent', 'cloud-sql-proxy'],
      'config.kubeVersion': '1.31',
      'config.sleepAction': 'off',
      'config.logLevel': 'debug',
      'config.admissionLog': 'each',
      'config.certPollSeconds': 30,
      'webhook.failurePolicy': 'Fail',
      'webhook.timeoutSeconds': 10,
      'webhook.reinvocationPolicy': 'Never',
      'networkPolicy.enabled': true,
      'networkPolicy.apiServer': [{ ipBlock: { cidr: '10.0.0.0/28' } }],
      'networkPolicy.metrics': [
        { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } },
      ],
      replicaCount: 3,
      priorityClassName: 'system-cluster-critical',
      podAnnotations: { 'example.com/owner': 'platform' },
      nodeSelector: { 'kubernetes.io/os': 'linux' },
      tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'infra', effect: 'NoSchedule' }],
      'shutdown.preStopSleepSeconds': 8,
      'shutdown.terminationGracePeriodSeconds': 40,
    },
  },
  { name: 'one replica', kubeVersion: SERVER_VERSION, values: { replicaCount: 1 } },
  {
    name: 'development URL with its own CA bundle',
    kubeVersion: SERVER_VERSION,
    values: {
      'webhook.url': 'https://webhook.dev.example:9443/mutate',
      'webhook.caBundle': '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n',
    },
  },
];

interface Container {
  name: string;
  env: { name: string; value?: string; valueFrom?: unknown }[];
  ports: { name: string; containerPort: number }[];
  readinessProbe: { httpGet: { path: string; port: string } };
  livenessProbe: { httpGet: { path: string; port: string } };
  lifecycle?: { preStop?: { sleep?: { seconds: number }; exec?: unknown } };
  securityContext: Record<string, unknown>;
  volumeMounts: { name: string; mountPath: string }[];
  args?: string[];
}

interface PodSpec {
  containers: Container[];
  securityContext: Record<string, unknown>;
  terminationGracePeriodSeconds: number;
  topologySpreadConstraints: Record<string, unknown>[];
  automountServiceAccountToken?: boolean;
  volumes: { name: string; secret: { secretName: string; items: { key: string }[] } }[];
}

const deploymentOf = (docs: KubeObject[]) => {
  const deploy = findObject(docs, 'Deployment');
  const spec = deploy['spec'] as {
    replicas: number;
    strategy: { rollingUpdate: { maxUnavailable: number; maxSurge: number } };
    template: { metadata: KubeObject['metadata']; spec: PodSpec };
  };
  return { deploy, spec, pod: spec.template.spec, container: spec.template.spec.containers[0]! };
};

interface Webhook {
  name: string;
  clientConfig: { url?: string; caBundle?: string; service?: Record<string, unknown> };
  rules: { operations: string[]; apiGroups: string[]; resources: string[] }[];
  failurePolicy: string;
  timeoutSeconds: number;
  sideEffects: string;
  admissionReviewVersions: string[];
  reinvocationPolicy: string;
  namespaceSelector: {
    matchLabels?: Record<string, string>;
    matchExpressions: { key: string; operator: string; values?: string[] }[];
  };
  objectSelector?: unknown;
  matchConditions?: { name: string; expression: string }[];
}

const webhookOf = (docs: KubeObject[]) => {
  const mwc = findObject(docs, 'MutatingWebhookConfiguration');
  const webhooks = mwc['webhooks'] as Webhook[];
  assert.equal(webhooks.length, 1);
  return { mwc, webhook: webhooks[0]! };
};

const envOf = (container: Container): Record<string, string> =>
  Object.fromEntries(
    container.env.map((e) => [e.name, e.value ?? `<from ${JSON.stringify(e.valueFrom)}>`]),
  );

describe('the Helm chart, rendered and validated by a real API server', () => {
  let tools: Tools;
  let cp: ControlPlane | undefined;
  let scratch: Awaited<ReturnType<typeof scratchDir>> | undefined;
  let env: NodeJS.ProcessEnv;
  const renders = new Map<string, KubeObject[]>();

  const render = (values: Values, kubeVersion = SERVER_VERSION): Promise<KubeObject[]> =>
    helmTemplate(tools, { namespace: NAMESPACE, kubeVersion, values });

  /** helm's failure text for these values (the command must fail). */
  const renderError = async (values: Values): Promise<string> => {
    try {
      await render(values);
    } catch (err) {
      assert.ok(err instanceof HelmError, String(err));
      return err.result.stderr;
    }
    return assert.fail(`helm template accepted ${JSON.stringify(values)}`);
  };

  const helm = async (args: string[]) => {
    const result = await runCommand(tools.helm, args, { env });
    if (result.code !== 0) assert.fail(`helm ${args.join(' ')}:\n${result.stderr}${result.stdout}`);
    return result;
  };

  before(async () => {
    tools = await ensureTools();
    cp = await startControlPlane();
    scratch = await scratchDir('chart-render');
    env = await toolEnvironment(tools, cp, scratch.dir);
    const ns = await createObject(cp, {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: NAMESPACE },
    });
    assert.equal(ns.status, 201);
    await installCertManagerCrds(cp);
    for (const set of VALUE_SETS) renders.set(set.name, await render(set.values, set.kubeVersion));
  });

  after(async () => {
    await cp?.stop();
    await scratch?.remove();
  });

  describe('lint and values', () => {
    it('passes helm lint --strict, with default and non-default values', async () => {
      for (const set of VALUE_SETS) {
        const result = await runCommand(tools.helm, [
          'lint',
          '--strict',
          chartDir,
          '--kube-version',
          set.kubeVersion,
          ...setJsonArgs({ ...IMAGE_VALUES, ...set.values }),
        ]);
        assert.equal(result.code, 0, `${set.name}: ${result.stdout}${result.stderr}`);
        assert.match(result.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
      }
    });

    it('rejects bad values, naming the value and what is allowed', async () => {
      const cases: [Values, RegExp][] = [
        [
          { 'config.delaySeconds': 5000 },
          /\/config\/delaySeconds': maximum: got 5,000, want 3,600/,
        ],
        [{ 'config.mode': 'fast' }, /\/config\/mode': value must be one of 'sleep', 'drain'/],
        [
          { 'config.injectDefault': 'yes' },
          /\/config\/injectDefault': value must be one of 'enabled', 'disabled'/,
        ],
        [{ 'config.sleepAction': 'sometimes' }, /\/config\/sleepAction'/],
        [{ 'config.delaySecond': 3 }, /\/config': additional properties 'delaySecond' not allowed/],
        [
          { 'config.kubeVersion': 'latest' },
          /\/config\/kubeVersion': 'latest' does not match pattern/,
        ],
        [{ 'config.helperSidecars': ['a,b'] }, /\/config\/helperSidecars\/0'/],
        [
          { 'webhook.failurePolicy': 'fail' },
          /\/webhook\/failurePolicy': value must be one of 'Ignore', 'Fail'/,
        ],
        [{ 'webhook.timeoutSeconds': 60 }, /\/webhook\/timeoutSeconds': maximum: got 60, want 30/],
        [
          { 'webhook.url': 'http://insecure:80/mutate' },
          /\/webhook\/url': 'http:\/\/insecure:80\/mutate' does not match pattern/,
        ],
        [
          { 'webhook.namespaceSelector': { matchExpressions: [{ key: 'a', operator: 'Equals' }] } },
          /\/webhook\/namespaceSelector\/matchExpressions\/0\/operator'/,
        ],
        [
          { 'certificates.mode': 'vault' },
          /\/certificates\/mode': value must be one of 'self-signed', 'cert-manager'/,
        ],
        [
          { 'certificates.certManager.issuerRef': { kind: 'ClusterIssuer' } },
          /\/certificates\/certManager\/issuerRef': missing property 'name'/,
        ],
        [{ replicaCount: 0 }, /\/replicaCount': minimum: got 0, want 1/],
      ];
      for (const [values, message] of cases) {
        const stderr = await renderError(values);
        assert.match(stderr, /values don't meet the specifications of the schema/);
        assert.match(stderr, message, `${JSON.stringify(values)} -> ${stderr}`);
      }
    });

    it('rejects inconsistent values with a sentence that says what to change', async () => {
      const cases: [Values, RegExp][] = [
        [
          { 'shutdown.preStopSleepSeconds': 30 },
          /shutdown\.preStopSleepSeconds \(30\) must be less than shutdown\.terminationGracePeriodSeconds \(30\)/,
        ],
        [
          { 'certificates.selfSigned.renewBeforeDays': 800 },
          /renewBeforeDays \(800\) must be less than certificates\.selfSigned\.certValidityDays \(730\)/,
        ],
        [
          { 'networkPolicy.enabled': true },
          /networkPolicy\.enabled needs networkPolicy\.apiServer/,
        ],
        [
          { 'image.repository': '' },
          /image\.repository is required: build the image from the repository's Dockerfile/,
        ],
        [
          { 'webhook.caBundle': '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----' },
          /webhook\.caBundle is only for webhook\.url/,
        ],
      ];
      for (const [values, message] of cases) assert.match(await renderError(values), message);
    });

    it('sets every server option from values, and the server accepts them', () => {
      // Options the chart leaves to the server on purpose.
      const notSet: Partial<Record<OptionName, string>> = {
        host: 'the default (all interfaces) is right in a pod',
        kubeconfig: 'in-cluster config',
      };
      for (const set of VALUE_SETS) {
        const { container } = deploymentOf(renders.get(set.name)!);
        const rendered = envOf(container);
        for (const [name, spec] of Object.entries(OPTIONS) as [OptionName, { env: string }][]) {
          if (notSet[name] !== undefined) {
            assert.ok(!(spec.env in rendered), `${spec.env} is left to the server`);
            continue;
          }
          assert.ok(
            spec.env in rendered,
            `${set.name}: the Deployment sets ${spec.env} (server option --${OPTIONS[name].flag}); ` +
              'a new server option needs a value in values.yaml and an env var in deployment.yaml',
          );
        }
        rendered['POD_NAMESPACE'] = NAMESPACE;
        // The server's own parser: it exits on bad config, so this is what it would do.
        const config = buildConfig(readRawOptions([], rendered));
        if (set.name === 'every setting changed') {
          assert.deepEqual(
            {
              inject: config.defaults.inject,
              mode: config.defaults.mode,
              delay: config.defaults.delaySeconds,
              drain: config.defaults.drainTimeoutSeconds,
              quiet: config.defaults.drainQuietSeconds,
              sidecars: config.defaults.sidecars,
              distroless: config.planner.distrolessPatterns,
              helpers: config.planner.helperSidecars,
              kube: config.kubeVersionOverride,
              sleep: config.capabilityOverrides.sleepAction,
              log: config.logLevel,
              admissionLog: config.admissionLog,
              poll: config.certPollMs,
            },
            {
              inject: true,
              mode: 'drain',
              delay: 25,
              drain: 90,
              quiet: 7,
              sidecars: false,
              distroless: ['chainguard', 'scratch'],
              helpers: ['vault-agent', 'cloud-sql-proxy'],
              kube: '1.31',
              sleep: 'off',
              log: 'debug',
              admissionLog: 'each',
              poll: 30_000,
            },
          );
        }
        if (set.name === 'defaults') {
          assert.equal(config.defaults.inject, false, 'opt-in by default');
          assert.equal(config.defaults.delaySeconds, 10);
          assert.equal(config.cluster, 'on', 'watches namespaces in the cluster');
          assert.equal(config.ownNamespace, NAMESPACE);
          assert.equal(
            config.port,
            container.ports.find((p) => p.name === 'webhook')!.containerPort,
          );
          assert.equal(
            config.healthPort,
            container.ports.find((p) => p.name === 'health')!.containerPort,
          );
          const mount = container.volumeMounts.find((m) => m.name === 'tls')!.mountPath;
          assert.equal(config.tlsCertPath, `${mount}/tls.crt`);
          assert.equal(config.tlsKeyPath, `${mount}/tls.key`);
        }
      }
    });
  });

  describe('renderings', () => {
    it('are accepted by the API server (server-side dry run of every object)', async () => {
      for (const set of VALUE_SETS) {
        const docs = renders.get(set.name)!;
        const kinds = docs.map((d) => d.kind).sort();
        for (const doc of docs) {
          const res = await createObject(cp!, doc, { dryRun: true, namespace: NAMESPACE });
          assert.equal(
            res.status,
            201,
            `${set.name}: ${doc.kind}/${doc.metadata.name} refused: ${JSON.stringify(res.body)}`,
          );
        }
        const expected = [
          'ClusterRole',
          'ClusterRoleBinding',
          'Deployment',
          'MutatingWebhookConfiguration',
          'Pod',
          'Service',
          'ServiceAccount',
          ...(set.values['replicaCount'] === 1 ? [] : ['PodDisruptionBudget']),
          ...(set.values['networkPolicy.enabled'] ? ['NetworkPolicy'] : []),
          ...(set.certManager
            ? set.values['certificates.certManager.issuerRef']
              ? ['Certificate']
              : ['Certificate', 'Certificate', 'Issuer', 'Issuer']
            : ['Secret', 'Secret']),
        ].sort();
        assert.deepEqual(kinds, expected, `${set.name}: the objects rendered`);
      }
    });

    it('register a pods CREATE webhook that fails open, excluding system namespaces', () => {
      for (const set of VALUE_SETS) {
        const { webhook } = webhookOf(renders.get(set.name)!);
        assert.deepEqual(webhook.rules, [
          {
            operations: ['CREATE'],
            apiGroups: [''],
            apiVersions: ['v1'],
            resources: ['pods'],
            scope: 'Namespaced',
          },
        ]);
        assert.equal(webhook.sideEffects, 'None');
        assert.deepEqual(webhook.admissionReviewVersions, ['v1']);
        const changed = set.name === 'every setting changed';
        assert.equal(webhook.failurePolicy, changed ? 'Fail' : 'Ignore');
        assert.equal(webhook.timeoutSeconds, changed ? 10 : 5);
        assert.equal(webhook.reinvocationPolicy, changed ? 'Never' : 'IfNeeded');
        const exclusion = webhook.namespaceSelector.matchExpressions[0]!;
        assert.equal(exclusion.key, 'kubernetes.io/metadata.name');
        assert.equal(exclusion.operator, 'NotIn');
        for (const ns of ['kube-system', 'kube-public', 'kube-node-lease', NAMESPACE])
          assert.ok(exclusion.values?.includes(ns), `${set.name}: ${ns} excluded`);
        const hasConditions = set.kubeVersion !== '1.27.0';
        assert.equal(
          webhook.matchConditions !== undefined,
          hasConditions,
          `${set.name}: matchConditions only where the cluster has them (1.28+)`,
        );
      }
      const custom = webhookOf(renders.get('custom selectors')!).webhook;
      assert.deepEqual(custom.namespaceSelector.matchLabels, { team: 'payments' });
      assert.deepEqual(custom.namespaceSelector.matchExpressions.slice(1), [
        { key: 'env', operator: 'In', values: ['prod', 'staging'] },
      ]);
      assert.ok(custom.namespaceSelector.matchExpressions[0]!.values!.includes('batch-jobs'));
      assert.deepEqual(custom.objectSelector, {
        matchExpressions: [{ key: 'prestop-injector.io/skip', operator: 'DoesNotExist' }],
      });
      assert.deepEqual(
        custom.matchConditions?.map((c) => c.name),
        ['not-opted-out', 'not-batch', 'not-static-pods'],
      );
    });

    it('point the webhook at the Service with the chart CA, or at cert-manager, or at the dev URL', () => {
      const selfSigned = renders.get('defaults')!;
      const { webhook } = webhookOf(selfSigned);
      assert.deepEqual(webhook.clientConfig.service, {
        name: RELEASE,
        namespace: NAMESPACE,
        path: '/mutate',
        port: 443,
      });
      const tls = findObject(selfSigned, 'Secret', `${RELEASE}-tls`);
      const data = tls['data'] as Record<string, string>;
      assert.equal(webhook.clientConfig.caBundle, data['ca.crt']);
      const leaf = new X509Certificate(Buffer.from(data['tls.crt']!, 'base64'));
      const ca = new X509Certificate(Buffer.from(data['ca.crt']!, 'base64'));
      assert.ok(leaf.verify(ca.publicKey), 'leaf signed by the CA');
      assert.ok(ca.ca, 'CA certificate is a CA');
      for (const host of [
        `${RELEASE}.${NAMESPACE}.svc`,
        `${RELEASE}.${NAMESPACE}.svc.cluster.local`,
      ])
        assert.equal(leaf.checkHost(host), host, `serving certificate covers ${host}`);
      // The CA's key stays out of the pods: only the serving pair is mounted.
      const { pod } = deploymentOf(selfSigned);
      assert.deepEqual(
        pod.volumes[0]!.secret.items.map((i) => i.key),
        ['tls.crt', 'tls.key'],
      );
      assert.equal(pod.volumes[0]!.secret.secretName, `${RELEASE}-tls`);

      const cm = renders.get('cert-manager, chart-made CA')!;
      const cmWebhook = webhookOf(cm);
      assert.equal(cmWebhook.webhook.clientConfig.caBundle, undefined, 'injected, not rendered');
      assert.equal(
        cmWebhook.mwc.metadata.annotations?.['cert-manager.io/inject-ca-from'],
        `${NAMESPACE}/${RELEASE}-tls`,
      );
      const cert = findObject(cm, 'Certificate', `${RELEASE}-tls`)['spec'] as Record<
        string,
        unknown
      >;
      assert.equal(cert['secretName'], `${RELEASE}-tls`);
      assert.ok((cert['dnsNames'] as string[]).includes(`${RELEASE}.${NAMESPACE}.svc`));
      assert.deepEqual(cert['issuerRef'], {
        name: `${RELEASE}-ca`,
        kind: 'Issuer',
        group: 'cert-manager.io',
      });
      const existing = findObject(
        renders.get('cert-manager, existing ClusterIssuer')!,
        'Certificate',
      );
      assert.deepEqual((existing['spec'] as Record<string, unknown>)['issuerRef'], {
        name: 'corp-ca',
        kind: 'ClusterIssuer',
        group: 'cert-manager.io',
      });

      const dev = webhookOf(renders.get('development URL with its own CA bundle')!).webhook;
      assert.equal(dev.clientConfig.url, 'https://webhook.dev.example:9443/mutate');
      assert.equal(dev.clientConfig.service, undefined);
      assert.match(
        Buffer.from(dev.clientConfig.caBundle!, 'base64').toString(),
        /BEGIN CERTIFICATE/,
      );
    });

    it('run two spread replicas that practise what they preach', () => {
      for (const set of VALUE_SETS) {
        const { spec, pod, container, deploy } = deploymentOf(renders.get(set.name)!);
        const changed = set.name === 'every setting changed';
        assert.equal(spec.replicas, changed ? 3 : set.name === 'one replica' ? 1 : 2);
        assert.deepEqual(spec.strategy.rollingUpdate, { maxSurge: 1, maxUnavailable: 0 });
        assert.deepEqual(
          pod.topologySpreadConstraints.map((t) => t['topologyKey']),
          ['topology.kubernetes.io/zone', 'kubernetes.io/hostname'],
        );
        assert.deepEqual(container.readinessProbe.httpGet, { path: '/readyz', port: 'health' });
        assert.deepEqual(container.livenessProbe.httpGet, { path: '/healthz', port: 'health' });
        assert.deepEqual(pod.securityContext['seccompProfile'], { type: 'RuntimeDefault' });
        assert.equal(pod.securityContext['runAsNonRoot'], true);
        assert.deepEqual(container.securityContext, {
          allowPrivilegeEscalation: false,
          readOnlyRootFilesystem: true,
          runAsNonRoot: true,
          capabilities: { drop: ['ALL'] },
          seccompProfile: { type: 'RuntimeDefault' },
        });
        // Native sleep action from 1.30; the image has no shell for an exec sleep.
        const sleep = container.lifecycle?.preStop?.sleep?.seconds;
        const old = set.kubeVersion === '1.29.0' || set.kubeVersion === '1.27.0';
        assert.equal(sleep, old ? undefined : changed ? 8 : 5, `${set.name}: own preStop`);
        assert.equal(container.lifecycle?.preStop?.exec, undefined, 'never an exec hook');
        // Without the sleep action the server waits as long itself after SIGTERM.
        assert.equal(
          envOf(container)['PRESTOP_SHUTDOWN_DELAY_SECONDS'],
          old ? '5' : '0',
          `${set.name}: server-side shutdown delay`,
        );
        assert.equal(pod.terminationGracePeriodSeconds, changed ? 40 : 30);
        const checksum = spec.template.metadata.annotations?.['checksum/tls'];
        if (set.certManager) assert.equal(checksum, undefined);
        else assert.match(checksum ?? '', /^[0-9a-f]{64}$/, `${set.name}: certificate checksum`);
        assert.ok(deploy.metadata.labels?.['app.kubernetes.io/version']);
      }
      const pdb = findObject(renders.get('defaults')!, 'PodDisruptionBudget');
      assert.equal((pdb['spec'] as Record<string, unknown>)['minAvailable'], 1);
      assert.ok(
        !renders.get('one replica')!.some((d) => d.kind === 'PodDisruptionBudget'),
        'no PDB for one replica: it would block every drain',
      );
    });

    it('grant only get, list and watch on namespaces', () => {
      for (const set of VALUE_SETS) {
        const docs = renders.get(set.name)!;
        const role = findObject(docs, 'ClusterRole');
        assert.deepEqual(role['rules'], [
          { apiGroups: [''], resources: ['namespaces'], verbs: ['get', 'list', 'watch'] },
        ]);
        assert.ok(!docs.some((d) => d.kind === 'Role' || d.kind === 'RoleBinding'));
        const binding = findObject(docs, 'ClusterRoleBinding');
        assert.deepEqual(binding['subjects'], [
          { kind: 'ServiceAccount', name: RELEASE, namespace: NAMESPACE },
        ]);
        const test = findObject(docs, 'Pod');
        assert.equal((test['spec'] as PodSpec).automountServiceAccountToken, false);
      }
    });

    it('admit only the API server to the webhook port when the NetworkPolicy is on', () => {
      const policy = findObject(renders.get('every setting changed')!, 'NetworkPolicy');
      assert.deepEqual(policy['spec'], {
        podSelector: {
          matchLabels: {
            'app.kubernetes.io/name': 'prestop-injector',
            'app.kubernetes.io/instance': RELEASE,
          },
        },
        policyTypes: ['Ingress'],
        ingress: [
          {
            from: [{ ipBlock: { cidr: '10.0.0.0/28' } }],
            ports: [{ port: 'webhook', protocol: 'TCP' }],
          },
          {
            from: [
              {
                namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } },
              },
            ],
            ports: [{ port: 'health', protocol: 'TCP' }],
          },
        ],
      });
      assert.ok(
        !renders.get('defaults')!.some((d) => d.kind === 'NetworkPolicy'),
        'off by default',
      );
    });
  });

  describe('Pod Security Standards', () => {
    const RESTRICTED = 'psa-restricted';

    before(async () => {
      const res = await createObject(cp!, {
        apiVersion: 'v1',
        kind: 'Namespace',
        metadata: {
          name: RESTRICTED,
          labels: {
            'pod-security.kubernetes.io/enforce': 'restricted',
            'pod-security.kubernetes.io/enforce-version': 'latest',
            'pod-security.kubernetes.io/warn': 'restricted',
            'pod-security.kubernetes.io/warn-version': 'latest',
          },
        },
      });
      assert.equal(res.status, 201);
    });

    /** The Deployment's pod template as a Pod (what the ReplicaSet would create). */
    const podFromTemplate = (docs: KubeObject[], name: string): KubeObject => {
      const { spec } = deploymentOf(docs);
      return {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name, labels: spec.template.metadata.labels ?? {} },
        spec: spec.template.spec,
      } as KubeObject;
    };

    it('the Deployment is admitted in a restricted namespace with no warnings', async () => {
      for (const set of VALUE_SETS) {
        const { deploy } = deploymentOf(renders.get(set.name)!);
        const res = await createObject(
          cp!,
          { ...deploy, metadata: { ...deploy.metadata, namespace: RESTRICTED } },
          {
            dryRun: true,
          },
        );
        assert.equal(res.status, 201, JSON.stringify(res.body));
        assert.deepEqual(res.warnings, [], `${set.name}: no PodSecurity warnings`);
      }
    });

    it('its pods and the helm test pod are admitted under enforcement', async () => {
      for (const set of VALUE_SETS) {
        const docs = renders.get(set.name)!;
        const pod = await createObject(
          cp!,
          podFromTemplate(docs, `webhook-${VALUE_SETS.indexOf(set)}`),
          {
            namespace: RESTRICTED,
          },
        );
        assert.equal(pod.status, 201, `${set.name}: ${JSON.stringify(pod.body)}`);
        assert.deepEqual(pod.warnings, []);
        const test = findObject(docs, 'Pod');
        const created = await createObject(
          cp!,
          {
            ...test,
            metadata: {
              ...test.metadata,
              name: `test-${VALUE_SETS.indexOf(set)}`,
              namespace: RESTRICTED,
            },
          },
          { namespace: RESTRICTED },
        );
        assert.equal(created.status, 201, `${set.name}: ${JSON.stringify(created.body)}`);
      }
    });

    it('the same check refuses a pod that breaks the profile (control)', async () => {
      const docs = renders.get('defaults')!;
      const pod = podFromTemplate(docs, 'loosened');
      const spec = structuredClone(pod['spec']) as PodSpec;
      delete spec.containers[0]!.securityContext['allowPrivilegeEscalation'];
      spec.containers[0]!.securityContext['capabilities'] = {};
      const res = await createObject(cp!, { ...pod, spec } as KubeObject, {
        namespace: RESTRICTED,
      });
      assert.equal(res.status, 403);
      assert.match(String(res.body.message), /violates PodSecurity "restricted:latest"/);
      const { deploy } = deploymentOf(docs);
      const loosened = structuredClone(deploy);
      (loosened['spec'] as { template: { spec: PodSpec } }).template.spec = spec;
      loosened.metadata.namespace = RESTRICTED;
      const warned = await createObject(cp!, loosened, { dryRun: true });
      assert.equal(warned.status, 201, 'workloads are only warned about');
      assert.ok(
        warned.warnings.some((w) => /would violate PodSecurity "restricted:latest"/.test(w)),
      );
    });
  });

  describe('the self-signed certificates across helm upgrades', () => {
    const NS = 'cert-lifecycle';
    const state = async () => {
      const secret = async (name: string) =>
        (await readObject(cp!, {
          apiVersion: 'v1',
          kind: 'Secret',
          name,
          namespace: NS,
        })) as KubeObject;
      const tls = await secret(`${RELEASE}-tls`);
      const ca = await secret(`${RELEASE}-ca`);
      const mwc = await readObject(cp!, {
        apiVersion: 'admissionregistration.k8s.io/v1',
        kind: 'MutatingWebhookConfiguration',
        name: RELEASE,
      });
      const deploy = await readObject(cp!, {
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        name: RELEASE,
        namespace: NS,
      });
      const data = tls['data'] as Record<string, string>;
      return {
        ca: (ca['data'] as Record<string, string>)['tls.crt']!,
        caBundle: (mwc!['webhooks'] as Webhook[])[0]!.clientConfig.caBundle!,
        cert: data['tls.crt']!,
        caInTls: data['ca.crt']!,
        checksum: (deploy!['spec'] as { template: { metadata: KubeObject['metadata'] } }).template
          .metadata.annotations?.['checksum/tls'],
        renewAfter: tls.metadata.annotations?.['prestop-injector.io/renew-after'],
      };
    };
    const x509 = (b64: string) => new X509Certificate(Buffer.from(b64, 'base64'));
    // Nothing is ever sent to this release's webhook: it sees no namespace.
    const quiet = setJsonArgs({
      ...IMAGE_VALUES,
      'webhook.namespaceSelector': { matchLabels: { never: 'matches' } },
    });

    after(async () => {
      await runCommand(tools.helm, ['uninstall', RELEASE, '--namespace', NS], { env });
    });

    it('keeps the CA and the certificate; re-issues the certificate only when due', async () => {
      await helm(['install', RELEASE, chartDir, '--namespace', NS, '--create-namespace', ...quiet]);
      const installed = await state();
      assert.equal(installed.caBundle, installed.ca, 'caBundle is the CA');
      assert.equal(installed.caInTls, installed.ca);
      assert.ok(x509(installed.cert).verify(x509(installed.ca).publicKey));
      const renewAfter = Number(installed.renewAfter);
      const expected = Date.now() / 1000 + (730 - 90) * 86400;
      assert.ok(Math.abs(renewAfter - expected) < 3600, `renew-after ${renewAfter} ~ ${expected}`);

      // Nothing changed: nothing re-issued, no pod restart.
      await helm(['upgrade', RELEASE, chartDir, '--namespace', NS, '--reuse-values']);
      assert.deepEqual(await state(), installed, 'a plain upgrade changes nothing');

      // New names (the webhook.url host): same CA, a new certificate covering them.
      await helm([
        'upgrade',
        RELEASE,
        chartDir,
        '--namespace',
        NS,
        '--reuse-values',
        '--set',
        'webhook.url=https://127.0.0.1:9443/mutate',
      ]);
      const renamed = await state();
      assert.equal(renamed.ca, installed.ca, 'same CA');
      assert.equal(renamed.caBundle, installed.caBundle, 'same caBundle');
      assert.notEqual(renamed.cert, installed.cert, 'new certificate');
      assert.notEqual(renamed.checksum, installed.checksum, 'pods roll to pick it up');
      assert.equal(x509(renamed.cert).checkIP('127.0.0.1'), '127.0.0.1');
      assert.ok(x509(renamed.cert).verify(x509(installed.ca).publicKey));

      // Renewal time reached (set in the past by hand): re-issued, same CA.
      const patch = await api(
        cp!,
        'PATCH',
        `/api/v1/namespaces/${NS}/secrets/${RELEASE}-tls`,
        { metadata: { annotations: { 'prestop-injector.io/renew-after': '1' } } },
        'application/merge-patch+json',
      );
      assert.equal(patch.status, 200);
      await helm(['upgrade', RELEASE, chartDir, '--namespace', NS, '--reuse-values']);
      const renewed = await state();
      assert.equal(renewed.ca, installed.ca, 'same CA after renewal');
      assert.notEqual(renewed.cert, renamed.cert, 'renewed certificate');
      assert.ok(Number(renewed.renewAfter) > Date.now() / 1000, 'next renewal in the future');

      // Rotating the CA is deleting its Secret: the next upgrade makes a new one.
      const del = await api(cp!, 'DELETE', `/api/v1/namespaces/${NS}/secrets/${RELEASE}-ca`);
      assert.equal(del.status, 200);
      await helm(['upgrade', RELEASE, chartDir, '--namespace', NS, '--reuse-values']);
      const rotated = await state();
      assert.notEqual(rotated.ca, installed.ca, 'new CA');
      assert.equal(rotated.caBundle, rotated.ca, 'caBundle follows');
      assert.ok(
        x509(rotated.cert).verify(x509(rotated.ca).publicKey),
        'certificate from the new CA',
      );
    });
  });

  describe('the helm test pod', () => {
    const runTestPod = async (url: string, caFile: string) => {
      const test = findObject(renders.get('defaults')!, 'Pod');
      const args = (test['spec'] as PodSpec).containers[0]!.args!;
      return runCommand(process.execPath, args, {
        env: { WEBHOOK_URL: url, WEBHOOK_CA: caFile },
        timeoutMs: 30_000,
      });
    };

    it('passes against a real webhook and fails when it does not answer', async () => {
      const webhook = await startWebhook({ injectDefault: 'disabled', kubeVersion: '1.37' });
      try {
        const caFile = path.join(scratch!.dir, 'webhook-ca.crt');
        await fsp.writeFile(caFile, webhook.caPem);
        const ok = await runTestPod(webhook.url, caFile);
        assert.equal(ok.code, 0, ok.stderr);
        assert.match(ok.stdout, /^ok: .* answered with \d+ patch operations/);
        const closed = await getFreePort();
        const down = await runTestPod(`https://127.0.0.1:${closed}/mutate`, caFile);
        assert.equal(down.code, 1);
        assert.match(down.stderr, /FAIL: .*ECONNREFUSED/);
        const wrongCa = path.join(scratch!.dir, 'other-ca.crt');
        await fsp.writeFile(wrongCa, cp!.caPem);
        const untrusted = await runTestPod(webhook.url, wrongCa);
        assert.equal(untrusted.code, 1, 'a certificate from another CA fails the test');
      } finally {
        await webhook.stop();
      }
    });
  });
});
