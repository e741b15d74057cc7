// The Helm chart, rendered and checked against a real kube-apiserver (no
// node): helm lint; the schema's and the templates' error messages; every
// ci/*-values.yaml set rendered and validated object by object by a
// server-side dry run (with cert-manager's and the Prometheus Operator's
// CRDs installed from their Go modules); the same output on every render;
// the server settings the Deployment sets, read back by the server's own
// config parser; RBAC down to resource names; Pod Security "restricted";
// the alerts checked by Prometheus's own rule loader and matched against
// series the webhook and the API server really export; a real helm install
// and upgrade that keeps what the webhook wrote; the helm test pod's script.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import https from 'node:https';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildConfig, OPTIONS, readRawOptions, type OptionName } from '../../src/cli/config.ts';
import { registerWebhook, deleteWebhook, createNamespace } from '../support/cluster/api.ts';
import { startControlPlane, type ControlPlane } from '../support/cluster/apiserver.ts';
import { ensureTools, type Tools } from '../support/cluster/binaries.ts';
import { httpGet } from '../support/cluster/processes.ts';
import { makeDevCerts, startServe } from '../support/serve.ts';
import {
  api,
  chartDir,
  checkPrometheusRules,
  ciValueSets,
  createObject,
  findObject,
  helmTemplate,
  HelmError,
  installCertManagerCrds,
  installPrometheusOperatorCrds,
  readObject,
  runCommand,
  scratchDir,
  setJsonArgs,
  toolEnvironment,
  type CheckedRule,
  type KubeObject,
  type ValueSet,
} from '../support/chart.ts';
import { getFreePort } from '../support/free-port.ts';

const NAMESPACE = 'chart-render';
const RELEASE = 'prestop-injector';
const SERVER_VERSION = '1.37.2';

type Values = Record<string, unknown>;

const SETS = ciValueSets();
const set = (name: string): ValueSet => {
  const found = SETS.find((s) => s.name === name);
  assert.ok(found, `ci/${name}-values.yaml exists`);
  return found;
};

/** The kinds each ci set renders, helm test pod and uninstall hook included. */
const WEBHOOK_KINDS = [
  'ClusterRole',
  'ClusterRoleBinding',
  'Deployment',
  'MutatingWebhookConfiguration',
  'Pod',
  'Service',
];
const HOOK_KINDS = ['ClusterRole', 'ClusterRoleBinding', 'Job', 'ServiceAccount'];
const RUNTIME_KINDS = ['Lease', 'Role', 'RoleBinding', 'Secret'];
const BASE = [...WEBHOOK_KINDS, ...HOOK_KINDS, 'PodDisruptionBudget', 'ServiceAccount'];
const EXPECTED_KINDS: Record<string, string[]> = {
  default: [...BASE, ...RUNTIME_KINDS],
  'cert-manager': [...BASE, 'Certificate', 'Certificate', 'Issuer', 'Issuer'],
  'cert-manager-issuer': [...BASE, 'Certificate'],
  'existing-ca-bundle': BASE,
  'existing-injected-ca': BASE,
  monitoring: [...BASE, ...RUNTIME_KINDS, 'ServiceMonitor', 'PrometheusRule'],
  podmonitor: [...BASE, ...RUNTIME_KINDS, 'PodMonitor', 'PrometheusRule'],
  'host-network': [...BASE, ...RUNTIME_KINDS, 'PodMonitor'],
  'gke-private': [...BASE, ...RUNTIME_KINDS],
  'port-443': [...BASE, ...RUNTIME_KINDS],
  'label-opt-in': [...BASE, ...RUNTIME_KINDS],
  // An existing ServiceAccount: none made for the webhook.
  'escape-hatches': [...WEBHOOK_KINDS, ...HOOK_KINDS, 'PodDisruptionBudget', ...RUNTIME_KINDS],
  // No uninstall hook, a NetworkPolicy.
  'every-setting': [
    ...WEBHOOK_KINDS,
    'PodDisruptionBudget',
    'ServiceAccount',
    ...RUNTIME_KINDS,
    'NetworkPolicy',
  ],
  'custom-selectors': [...BASE, ...RUNTIME_KINDS],
  'one-replica': [...WEBHOOK_KINDS, ...HOOK_KINDS, 'ServiceAccount', ...RUNTIME_KINDS],
  'development-url': [...BASE, ...RUNTIME_KINDS],
};

interface Container {
  name: string;
  args?: string[];
  env: { name: string; value?: string; valueFrom?: unknown }[];
  ports: { name: string; containerPort: number }[];
  readinessProbe: Record<string, unknown>;
  livenessProbe: Record<string, unknown>;
  startupProbe: Record<string, unknown>;
  lifecycle?: unknown;
  securityContext: Record<string, unknown>;
  volumeMounts?: { name: string; mountPath: string }[];
}

interface PodSpec {
  containers: Container[];
  securityContext: Record<string, unknown> & { sysctls?: { name: string; value: string }[] };
  terminationGracePeriodSeconds: number;
  topologySpreadConstraints: Record<string, unknown>[];
  serviceAccountName?: string;
  automountServiceAccountToken?: boolean;
  hostNetwork?: boolean;
  dnsPolicy?: string;
  volumes?: { name: string; secret?: { secretName: string; items: { key: string }[] } }[];
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
  rules: unknown[];
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

const b64 = (text: string) => Buffer.from(text).toString('base64');
const isHook = (doc: KubeObject) => doc.metadata.annotations?.['helm.sh/hook'] !== undefined;
const rulesOf = (doc: KubeObject) => doc['rules'] as Record<string, unknown>[];

describe('the Helm chart, rendered and validated by a real API server', () => {
  let tools: Tools;
  let cp: ControlPlane | undefined;
  let scratch: Awaited<ReturnType<typeof scratchDir>> | undefined;
  let env: NodeJS.ProcessEnv;
  const renders = new Map<string, KubeObject[]>();

  const render = (values: Values, kubeVersion = SERVER_VERSION): Promise<KubeObject[]> =>
    helmTemplate(tools, { namespace: NAMESPACE, kubeVersion, values });
  const renderSet = (name: string, kubeVersion = SERVER_VERSION) =>
    helmTemplate(tools, { namespace: NAMESPACE, kubeVersion, valuesFiles: [set(name).file] });

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
    env = await toolEnvironment(tools, cp.kubeconfigPath, scratch.dir);
    await createNamespace(cp, NAMESPACE);
    await installCertManagerCrds(cp);
    await installPrometheusOperatorCrds(cp);
    for (const s of SETS) renders.set(s.name, await renderSet(s.name));
    renders.set('default on 1.29', await renderSet('default', '1.29.0'));
    renders.set('default on 1.27', await renderSet('default', '1.27.0'));
  });

  after(async () => {
    await cp?.stop();
    await scratch?.remove();
  });

  describe('lint and values', () => {
    it('has a kinds list for every ci/ value set, and every set passes helm lint --strict', async () => {
      assert.deepEqual(SETS.map((s) => s.name).sort(), Object.keys(EXPECTED_KINDS).sort());
      for (const s of SETS) {
        const result = await runCommand(tools.helm, [
          'lint',
          '--strict',
          chartDir,
          '--kube-version',
          SERVER_VERSION,
          '--values',
          s.file,
        ]);
        assert.equal(result.code, 0, `${s.name}: ${result.stdout}${result.stderr}`);
        assert.match(result.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
      }
    });

    it('renders the same bytes every time: nothing from the cluster or the clock', async () => {
      for (const s of SETS) {
        const args = ['template', RELEASE, chartDir, '--namespace', NAMESPACE, '--values', s.file];
        const first = await runCommand(tools.helm, args);
        const second = await runCommand(tools.helm, args);
        assert.equal(first.code, 0, first.stderr);
        assert.ok(first.stdout.length > 1000);
        assert.equal(second.stdout, first.stdout, `${s.name}: two renders differ`);
      }
      const templates = fs.readdirSync(path.join(chartDir, 'templates'), { recursive: true });
      for (const file of templates.map(String).filter((f) => /\.(yaml|tpl|txt)$/.test(f))) {
        const actions =
          fs
            .readFileSync(path.join(chartDir, 'templates', file), 'utf8')
            .match(/\{\{[\s\S]*?\}\}/g) ?? [];
        const text = actions.join('\n');
        assert.doesNotMatch(
          text,
          /\b(lookup|genCA|genSignedCert|genPrivateKey|randAlphaNum|now|uuidv4)\b/,
          file,
        );
      }
    });

    it('rejects bad values, naming the value and what is allowed', async () => {
      const cases: [Values, RegExp][] = [
        [
          { 'config.delaySeconds': 5000 },
          /\/config\/delaySeconds': maximum: got 5,000, want 3,600/,
        ],
        [{ 'config.mode': 'fast' }, /\/config\/mode': value must be one of 'sleep', 'drain'/],
        [{ 'config.delaySecond': 3 }, /\/config': additional properties 'delaySecond' not allowed/],
        [
          { 'webhook.failurePolicy': 'fail' },
          /\/webhook\/failurePolicy': value must be one of 'Ignore', 'Fail'/,
        ],
        [
          { 'webhook.url': 'http://insecure:80/mutate' },
          /\/webhook\/url': 'http:\/\/insecure:80\/mutate' does not match pattern/,
        ],
        [
          { 'certificates.mode': 'self-signed' },
          /\/certificates\/mode': value must be one of 'runtime', 'cert-manager', 'existing'/,
        ],
        [
          { 'certificates.runtime.certValidity': '1y' },
          /\/certificates\/runtime\/certValidity': '1y' does not match pattern/,
        ],
        [
          { 'certificates.existing.injectCaFromSecret': 'no-namespace' },
          /\/certificates\/existing\/injectCaFromSecret'/,
        ],
        [
          { 'certificates.certManager.issuerRef': { kind: 'ClusterIssuer' } },
          /\/certificates\/certManager\/issuerRef': missing property 'name'/,
        ],
        [{ replicaCount: 0 }, /\/replicaCount': minimum: got 0, want 1/],
        [{ hostNetwork: 'yes' }, /\/hostNetwork': got string, want boolean/],
        [{ dnsPolicy: 'Cluster' }, /\/dnsPolicy': value must be one of/],
        [{ extraArgs: [''] }, /\/extraArgs\/0'/],
        [{ extraEnv: [{ value: 'x' }] }, /\/extraEnv\/0': missing property 'name'/],
        [
          { readinessProbe: { httpGets: {} } },
          /\/readinessProbe': additional properties 'httpGets' not allowed/,
        ],
        [
          { 'serviceAccount.crate': false },
          /\/serviceAccount': additional properties 'crate' not allowed/,
        ],
        [{ commonLabels: { team: 5 } }, /\/commonLabels\/team': got number, want string/],
        [
          { 'metrics.prometheusRule.disabled': ['NoSuchAlert'] },
          /\/metrics\/prometheusRule\/disabled\/0'/,
        ],
        [{ 'metrics.serviceMonitor.interval': 'often' }, /\/metrics\/serviceMonitor\/interval'/],
      ];
      for (const [values, message] of cases) {
        const stderr = await renderError(values);
        assert.match(stderr, /values don't meet the specifications of the schema/);
        assert.match(stderr, message, `${JSON.stringify(values)} -> ${stderr}`);
      }
    });

    it('rejects inconsistent values with a sentence that says what to change', async () => {
      const pem = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
      const cases: [Values, RegExp][] = [
        [
          { 'shutdown.delaySeconds': 30 },
          /shutdown\.delaySeconds \(30\) must be less than shutdown\.terminationGracePeriodSeconds \(30\)/,
        ],
        [
          { 'networkPolicy.enabled': true },
          /networkPolicy\.enabled needs networkPolicy\.apiServer/,
        ],
        [
          { 'image.repository': '' },
          /image\.repository is required: build the image from the repository's Dockerfile/,
        ],
        [{ 'webhook.caBundle': pem }, /webhook\.caBundle is only for webhook\.url/],
        [
          { 'certificates.mode': 'existing' },
          /certificates\.mode=existing needs certificates\.existing\.secretName/,
        ],
        [
          { 'certificates.mode': 'existing', 'certificates.existing.secretName': 'tls' },
          /needs exactly one of certificates\.existing\.caBundle, \.injectCaFromSecret or \.injectCaFrom/,
        ],
        [
          {
            'certificates.mode': 'existing',
            'certificates.existing.secretName': 'tls',
            'certificates.existing.caBundle': pem,
            'certificates.existing.injectCaFrom': 'a/b',
          },
          /needs exactly one of/,
        ],
        [
          { 'certificates.runtime.renewBefore': '9000h' },
          /certificates\.runtime\.renewBefore \(9000h\) must be less than certificates\.runtime\.certValidity \(8760h\)/,
        ],
        [
          { 'certificates.runtime.caValidity': '20000h' },
          /certificates\.runtime\.caValidity \(20000h\) must be at least 3 x certificates\.runtime\.certValidity \(8760h\)/,
        ],
        [
          { 'metrics.serviceMonitor.enabled': true, 'metrics.podMonitor.enabled': true },
          /choose one, or every pod is scraped twice/,
        ],
        [
          { hostNetwork: true, 'containerPorts.webhook': 443 },
          /containerPorts\.webhook 443 with hostNetwork: a port below 1024 on the node needs root/,
        ],
        [
          { 'serviceAccount.create': false },
          /serviceAccount\.create=false needs serviceAccount\.name/,
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
      const runtimeOnly: OptionName[] = [
        'tlsNames',
        'webhookConfiguration',
        'certValidity',
        'certRenewBefore',
        'caValidity',
      ];
      const filesOnly: OptionName[] = ['tlsCert', 'tlsKey'];
      for (const s of SETS) {
        const docs = renders.get(s.name)!;
        const { container } = deploymentOf(docs);
        const rendered = envOf(container);
        const runtime = rendered['PRESTOP_TLS_SECRET'] !== '';
        for (const [name, spec] of Object.entries(OPTIONS) as [
          OptionName,
          { env: string; flag: string },
        ][]) {
          const expected =
            notSet[name] === undefined &&
            !(runtimeOnly.includes(name) && !runtime) &&
            !(filesOnly.includes(name) && runtime);
          assert.equal(
            spec.env in rendered,
            expected,
            `${s.name}: ${spec.env} (--${spec.flag}) ${expected ? 'is set by the Deployment: a new server option needs a value in values.yaml and an env var in deployment.yaml' : 'is not set'}`,
          );
        }
        rendered['POD_NAMESPACE'] = NAMESPACE;
        // As the container starts: extraArgs follow `serve` and win over the environment.
        const args = container.args ?? ['dist/cli/main.js', 'serve'];
        assert.deepEqual(
          args.slice(0, 2),
          ['dist/cli/main.js', 'serve'],
          'the image CMD comes first',
        );
        const config = buildConfig(readRawOptions(args.slice(2), rendered));
        assert.equal(config.cluster, 'on', 'watches namespaces in the cluster');
        assert.equal(config.ownNamespace, NAMESPACE);
        assert.equal(config.port, container.ports.find((p) => p.name === 'webhook')!.containerPort);
        assert.equal(
          config.healthPort,
          container.ports.find((p) => p.name === 'health')!.containerPort,
        );
        if (runtime) {
          const rc = config.runtimeCertificates!;
          const { mwc } = webhookOf(docs);
          assert.equal(rc.webhookConfiguration, mwc.metadata.name);
          assert.equal(findObject(docs, 'Secret', rc.secretName).type, 'Opaque');
          assert.ok(findObject(docs, 'Lease', rc.secretName), 'the Lease of the Secret name');
          const svc = findObject(docs, 'Service');
          assert.ok(
            rc.names.includes(`${svc.metadata.name}.${NAMESPACE}.svc`),
            `${s.name}: the Service's name`,
          );
        } else {
          assert.equal(config.runtimeCertificates, null);
          const mount = container.volumeMounts!.find((m) => m.name === 'tls')!.mountPath;
          assert.equal(config.tlsCertPath, `${mount}/tls.crt`);
        }
        if (s.name === 'escape-hatches') assert.equal(config.logLevel, 'debug', 'extraArgs win');
        if (s.name === 'every-setting') {
          assert.deepEqual(
            [
              config.defaults.inject,
              config.defaults.mode,
              config.defaults.delaySeconds,
              config.defaults.drainQuietSeconds,
              config.planner.helperSidecars,
              config.capabilityOverrides.sleepAction,
              config.certPollMs,
            ],
            [true, 'drain', 25, 7, ['vault-agent', 'cloud-sql-proxy'], 'off', 30_000],
          );
          assert.equal(config.runtimeCertificates?.certValidityMs, 720 * 3_600_000);
        }
        if (s.name === 'default') {
          assert.equal(config.defaults.inject, false, 'opt-in by default');
          assert.equal(config.defaults.delaySeconds, 10);
        }
      }
    });
  });

  describe('renderings', () => {
    it('are accepted by the API server (server-side dry run of every object)', async () => {
      for (const [name, docs] of renders) {
        for (const doc of docs) {
          const res = await createObject(cp!, doc, { dryRun: true, namespace: NAMESPACE });
          assert.equal(
            res.status,
            201,
            `${name}: ${doc.kind}/${doc.metadata.name} refused: ${JSON.stringify(res.body)}`,
          );
        }
        const expected = EXPECTED_KINDS[name.replace(/ on 1\.\d+$/, '')];
        assert.deepEqual(
          docs.map((d) => d.kind).sort(),
          [...expected!].sort(),
          `${name}: the objects rendered`,
        );
      }
    });

    it('register a pods CREATE webhook that fails open, excluding system namespaces', () => {
      for (const [name, docs] of renders) {
        const { webhook } = webhookOf(docs);
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
        const changed = name === 'every-setting';
        assert.equal(webhook.failurePolicy, changed ? 'Fail' : 'Ignore');
        assert.equal(webhook.timeoutSeconds, changed ? 10 : 5);
        assert.equal(webhook.reinvocationPolicy, changed ? 'Never' : 'IfNeeded');
        const exclusion = webhook.namespaceSelector.matchExpressions[0]!;
        assert.deepEqual(
          [exclusion.key, exclusion.operator],
          ['kubernetes.io/metadata.name', 'NotIn'],
        );
        for (const ns of ['kube-system', 'kube-public', 'kube-node-lease', NAMESPACE])
          assert.ok(exclusion.values?.includes(ns), `${name}: ${ns} excluded`);
        assert.equal(
          webhook.matchConditions !== undefined,
          name !== 'default on 1.27',
          `${name}: matchConditions on 1.28+`,
        );
      }
      const custom = webhookOf(renders.get('custom-selectors')!).webhook;
      assert.deepEqual(custom.namespaceSelector.matchLabels, { team: 'payments' });
      assert.ok(custom.namespaceSelector.matchExpressions[0]!.values!.includes('batch-jobs'));
      assert.deepEqual(
        custom.matchConditions?.map((c) => c.name),
        ['not-opted-out', 'not-batch', 'not-static-pods'],
      );
      const labelled = webhookOf(renders.get('label-opt-in')!).webhook;
      assert.deepEqual(labelled.namespaceSelector.matchLabels, {
        'prestop-injector.io/inject': 'enabled',
      });
      const labelledEnv = envOf(deploymentOf(renders.get('label-opt-in')!).container);
      assert.equal(labelledEnv['PRESTOP_INJECT_DEFAULT'], 'enabled');
    });

    it('get their CA from the webhook, cert-manager, your bundle or your Secret', () => {
      const pem = (name: string) => {
        const values = set(name).values as {
          certificates?: { existing?: { caBundle?: string } };
          webhook?: { caBundle?: string };
        };
        return values.certificates?.existing?.caBundle ?? values.webhook?.caBundle ?? '';
      };
      const cases: [string, { caBundle?: string; annotation?: [string, string]; url?: string }][] =
        [
          // Run-time: written by the webhook, so neither rendered nor annotated.
          ['default', {}],
          [
            'cert-manager',
            { annotation: ['cert-manager.io/inject-ca-from', `${NAMESPACE}/${RELEASE}-tls`] },
          ],
          ['existing-ca-bundle', { caBundle: b64(pem('existing-ca-bundle')) }],
          [
            'existing-injected-ca',
            { annotation: ['cert-manager.io/inject-ca-from-secret', 'cert-manager/corp-root-ca'] },
          ],
          [
            'development-url',
            {
              caBundle: b64(pem('development-url')),
              url: 'https://webhook.dev.example:9443/mutate',
            },
          ],
        ];
      for (const [name, expected] of cases) {
        const { mwc, webhook } = webhookOf(renders.get(name)!);
        assert.equal(webhook.clientConfig.caBundle, expected.caBundle, `${name}: caBundle`);
        const injection = Object.entries(mwc.metadata.annotations ?? {}).filter(([k]) =>
          k.startsWith('cert-manager.io/'),
        );
        assert.deepEqual(
          injection,
          expected.annotation ? [expected.annotation] : [],
          `${name}: CA injection`,
        );
        if (expected.url)
          assert.deepEqual(webhook.clientConfig, {
            url: expected.url,
            caBundle: expected.caBundle,
          });
        else
          assert.deepEqual(webhook.clientConfig.service, {
            name: RELEASE,
            namespace: NAMESPACE,
            path: '/mutate',
            port: 443,
          });
      }
      // The serving pair's files come from the Secret of the mode, never with the CA key.
      for (const [name, secret] of [
        ['cert-manager', `${RELEASE}-tls`],
        ['existing-ca-bundle', 'webhook-serving-cert'],
      ] as const) {
        const { pod } = deploymentOf(renders.get(name)!);
        const volume = pod.volumes!.find((v) => v.name === 'tls')!;
        assert.equal(volume.secret!.secretName, secret);
        assert.deepEqual(
          volume.secret!.items.map((i) => i.key),
          ['tls.crt', 'tls.key'],
        );
      }
      assert.equal(
        deploymentOf(renders.get('default')!).pod.volumes,
        undefined,
        'run-time: nothing mounted',
      );
      const cert = findObject(renders.get('cert-manager-issuer')!, 'Certificate')['spec'] as Record<
        string,
        unknown
      >;
      assert.deepEqual(cert['issuerRef'], {
        name: 'corp-ca',
        kind: 'ClusterIssuer',
        group: 'cert-manager.io',
      });
      assert.ok((cert['dnsNames'] as string[]).includes(`${RELEASE}.${NAMESPACE}.svc`));
    });

    it('run spread replicas that practise what they preach, with probes you can override', () => {
      for (const [name, docs] of renders) {
        const { spec, pod, container } = deploymentOf(docs);
        assert.equal(spec.replicas, name === 'every-setting' ? 3 : name === 'one-replica' ? 1 : 2);
        assert.deepEqual(spec.strategy.rollingUpdate, { maxSurge: 1, maxUnavailable: 0 });
        assert.deepEqual(
          pod.topologySpreadConstraints.map((t) => t['topologyKey']),
          ['topology.kubernetes.io/zone', 'kubernetes.io/hostname'],
        );
        assert.deepEqual(container.securityContext, {
          allowPrivilegeEscalation: false,
          readOnlyRootFilesystem: true,
          runAsNonRoot: true,
          capabilities: { drop: ['ALL'] },
          seccompProfile: { type: 'RuntimeDefault' },
        });
        // No preStop of its own: no shell in the image, and a sleep action
        // would need every kubelet at 1.30+. The server waits instead.
        assert.equal(container.lifecycle, undefined, `${name}: no preStop`);
        assert.equal(
          envOf(container)['PRESTOP_SHUTDOWN_DELAY_SECONDS'],
          name === 'every-setting' ? '8' : '5',
        );
        assert.equal(pod.terminationGracePeriodSeconds, name === 'every-setting' ? 40 : 30);
        if (name !== 'escape-hatches') {
          assert.deepEqual(container.readinessProbe, {
            httpGet: { path: '/readyz', port: 'health' },
            periodSeconds: 5,
            failureThreshold: 2,
          });
          assert.deepEqual(container.livenessProbe, {
            httpGet: { path: '/healthz', port: 'health' },
            periodSeconds: 10,
            failureThreshold: 3,
          });
          assert.deepEqual(container.startupProbe, {
            httpGet: { path: '/healthz', port: 'health' },
            periodSeconds: 2,
            failureThreshold: 60,
          });
        }
      }
      const hatches = deploymentOf(renders.get('escape-hatches')!).container;
      assert.deepEqual(hatches.readinessProbe, {
        httpGet: { path: '/readyz', port: 'health' },
        periodSeconds: 3,
        timeoutSeconds: 2,
        failureThreshold: 2,
      });
      assert.deepEqual(
        hatches.livenessProbe,
        { tcpSocket: { port: 'health' }, periodSeconds: 10, failureThreshold: 5 },
        'a handler swapped',
      );
      assert.equal(hatches.startupProbe['failureThreshold'], 90);
      assert.equal(
        (
          findObject(renders.get('every-setting')!, 'PodDisruptionBudget')['spec'] as {
            minAvailable: number;
          }
        ).minAvailable,
        2,
      );
      assert.ok(
        !renders.get('one-replica')!.some((d) => d.kind === 'PodDisruptionBudget'),
        'no PDB for one replica',
      );
    });

    it('listen where managed clusters can reach them', () => {
      const host = deploymentOf(renders.get('host-network')!);
      assert.equal(host.pod.hostNetwork, true);
      assert.equal(host.pod.dnsPolicy, 'ClusterFirstWithHostNet');
      assert.deepEqual(
        host.container.ports.map((p) => p.containerPort),
        [10260, 10261],
      );
      assert.equal(host.pod.securityContext.sysctls, undefined, 'no sysctl in the node network');
      const gke = deploymentOf(renders.get('gke-private')!);
      assert.equal(gke.container.ports[0]!.containerPort, 10250);
      assert.equal(gke.pod.securityContext.sysctls, undefined);
      assert.equal(gke.pod.hostNetwork, undefined);
      const low = deploymentOf(renders.get('port-443')!);
      assert.deepEqual(low.pod.securityContext.sysctls, [
        { name: 'net.ipv4.ip_unprivileged_port_start', value: '443' },
      ]);
      assert.equal(envOf(low.container)['PRESTOP_PORT'], '443');
      for (const name of ['gke-private', 'port-443', 'host-network']) {
        const svc = findObject(renders.get(name)!, 'Service')['spec'] as {
          ports: { name: string; port: number; targetPort: string }[];
        };
        assert.deepEqual(svc.ports[0], {
          name: 'webhook',
          port: 443,
          targetPort: 'webhook',
          protocol: 'TCP',
        });
      }
    });

    it('take your environment, flags, volumes, labels, annotations and ServiceAccount', () => {
      const docs = renders.get('escape-hatches')!;
      for (const doc of docs) {
        assert.equal(
          doc.metadata.labels?.['team'],
          'platform',
          `${doc.kind}/${doc.metadata.name}: commonLabels`,
        );
      }
      const { deploy, spec, pod, container } = deploymentOf(docs);
      assert.equal(deploy.metadata.annotations?.['example.com/change-ticket'], 'CHG-42');
      assert.equal(deploy.metadata.labels?.['example.com/tier'], 'admission');
      assert.equal(spec.template.metadata.labels?.['team'], 'platform');
      assert.equal(spec.template.metadata.labels?.['example.com/tier'], 'admission');
      assert.equal(spec.template.metadata.annotations?.['example.com/owner'], 'platform');
      const e = envOf(container);
      assert.equal(e['NODE_OPTIONS'], '--max-old-space-size=384');
      assert.match(e['NODE_NAME']!, /spec\.nodeName/);
      assert.deepEqual(container.args, ['dist/cli/main.js', 'serve', '--log-level', 'debug']);
      assert.deepEqual(container.volumeMounts, [
        { name: 'corp-ca', mountPath: '/etc/corp-ca', readOnly: true },
      ]);
      assert.deepEqual(
        pod.volumes?.map((v) => v.name),
        ['corp-ca'],
      );
      assert.equal(pod.serviceAccountName, 'platform-webhooks');
      for (const kind of ['ClusterRoleBinding', 'RoleBinding']) {
        const binding = docs.find((d) => d.kind === kind && !isHook(d))!;
        assert.deepEqual(binding['subjects'], [
          { kind: 'ServiceAccount', name: 'platform-webhooks', namespace: NAMESPACE },
        ]);
      }
      const { mwc } = webhookOf(docs);
      assert.equal(mwc.metadata.annotations?.['example.com/owner'], 'platform');
      assert.equal(mwc.metadata.labels?.['example.com/tier'], 'admission');
      const svc = findObject(docs, 'Service');
      assert.equal(svc.metadata.annotations?.['example.com/scrape'], 'false');
      assert.equal(svc.metadata.labels?.['example.com/tier'], 'admission');
    });

    it('grant the webhook reads, and writes to its own Secret, Lease and webhook configuration only', () => {
      for (const [name, docs] of renders) {
        const role = docs.find((d) => d.kind === 'ClusterRole' && !isHook(d))!;
        const runtime = docs.some((d) => d.kind === 'Lease');
        assert.deepEqual(
          rulesOf(role),
          [
            {
              apiGroups: [''],
              resources: ['namespaces', 'nodes'],
              verbs: ['get', 'list', 'watch'],
            },
            { nonResourceURLs: ['/metrics'], verbs: ['get'] },
            ...(runtime
              ? [
                  {
                    apiGroups: ['admissionregistration.k8s.io'],
                    resources: ['mutatingwebhookconfigurations'],
                    resourceNames: [RELEASE],
                    verbs: ['get', 'patch'],
                  },
                ]
              : []),
          ],
          `${name}: ClusterRole`,
        );
        const namespaced = docs.filter((d) => d.kind === 'Role');
        assert.deepEqual(
          namespaced.map(rulesOf),
          runtime
            ? [
                [
                  {
                    apiGroups: [''],
                    resources: ['secrets'],
                    resourceNames: [`${RELEASE}-tls`],
                    verbs: ['get', 'patch'],
                  },
                  {
                    apiGroups: ['coordination.k8s.io'],
                    resources: ['leases'],
                    resourceNames: [`${RELEASE}-tls`],
                    verbs: ['get', 'patch'],
                  },
                ],
              ]
            : [],
          `${name}: Role`,
        );
        const hook = docs.find((d) => d.kind === 'ClusterRole' && isHook(d));
        if (hook) {
          assert.deepEqual(rulesOf(hook), [
            {
              apiGroups: ['admissionregistration.k8s.io'],
              resources: ['mutatingwebhookconfigurations'],
              resourceNames: [RELEASE],
              verbs: ['get', 'delete'],
            },
          ]);
          assert.equal(hook.metadata.annotations?.['helm.sh/hook'], 'pre-delete');
        }
        const test = findObject(docs, 'Pod');
        assert.equal(
          (test['spec'] as PodSpec).automountServiceAccountToken,
          false,
          'helm test has no API access',
        );
      }
    });

    it('keep the helm test pod and the uninstall hook out of the webhook Service and monitors', () => {
      const docs = renders.get('default')!;
      const selector = (findObject(docs, 'Service')['spec'] as { selector: Record<string, string> })
        .selector;
      const job = findObject(docs, 'Job')['spec'] as {
        template: { metadata: KubeObject['metadata'] };
      };
      for (const labels of [
        findObject(docs, 'Pod').metadata.labels!,
        job.template.metadata.labels!,
      ]) {
        assert.ok(
          !Object.entries(selector).every(([k, v]) => labels[k] === v),
          `${JSON.stringify(labels)} not selected`,
        );
      }
    });

    it('admit only the API server to the webhook port when the NetworkPolicy is on', () => {
      const policy = findObject(renders.get('every-setting')!, 'NetworkPolicy');
      assert.deepEqual((policy['spec'] as { ingress: unknown[] }).ingress, [
        {
          from: [{ ipBlock: { cidr: '10.0.0.0/28' } }],
          ports: [{ port: 'webhook', protocol: 'TCP' }],
        },
        {
          from: [
            { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } },
          ],
          ports: [{ port: 'health', protocol: 'TCP' }],
        },
      ]);
    });
  });

  describe('monitoring', () => {
    let rules: Map<string, CheckedRule[]>;

    before(async () => {
      rules = new Map();
      for (const name of ['monitoring', 'podmonitor']) {
        const rule = findObject(renders.get(name)!, 'PrometheusRule');
        rules.set(name, await checkPrometheusRules(tools, rule, scratch!.dir));
      }
    });

    it('scrape the webhook through a port its Service or pods have', () => {
      const sm = findObject(renders.get('monitoring')!, 'ServiceMonitor');
      const smSpec = sm['spec'] as {
        selector: { matchLabels: Record<string, string> };
        endpoints: Record<string, unknown>[];
      };
      const svc = findObject(renders.get('monitoring')!, 'Service');
      for (const [k, v] of Object.entries(smSpec.selector.matchLabels))
        assert.equal(svc.metadata.labels?.[k], v);
      assert.ok(
        (svc['spec'] as { ports: { name: string }[] }).ports.some(
          (p) => p.name === smSpec.endpoints[0]!['port'],
        ),
      );
      assert.deepEqual(smSpec.endpoints[0], {
        port: 'metrics',
        path: '/metrics',
        scheme: 'http',
        interval: '30s',
        scrapeTimeout: '10s',
        metricRelabelings: [{ sourceLabels: ['__name__'], regex: 'nodejs_.*', action: 'drop' }],
      });
      assert.equal(sm.metadata.labels?.['release'], 'kube-prometheus-stack');
      const pm = findObject(renders.get('podmonitor')!, 'PodMonitor')['spec'] as {
        podMetricsEndpoints: { port: string }[];
      };
      const container = deploymentOf(renders.get('podmonitor')!).container;
      assert.ok(container.ports.some((p) => p.name === pm.podMetricsEndpoints[0]!.port));
    });

    it('alert on what is worth waking for, in rules Prometheus loads', () => {
      const names = rules.get('monitoring')!.map((r) => r.name);
      assert.deepEqual(names, [
        'PrestopInjectorDown',
        'PrestopInjectorFailingOpen',
        'PrestopInjectorRejectingPods',
        'PrestopInjectorCertificateExpiring',
        'PrestopInjectorAdmissionErrors',
        'PrestopInjectorMalformedRequests',
        'PrestopInjectorNamespaceCacheNotSynced',
        'PrestopInjectorNamespaceCacheStale',
        'PrestopInjectorNodeCacheNotSynced',
        'PrestopInjectorNodeCacheStale',
      ]);
      assert.deepEqual(
        rules.get('podmonitor')!.map((r) => r.name),
        names.filter(
          (n) => n !== 'PrestopInjectorFailingOpen' && n !== 'PrestopInjectorRejectingPods',
        ),
        'disabled alerts are left out',
      );
      const spec = findObject(renders.get('monitoring')!, 'PrometheusRule')['spec'] as {
        groups: { rules: { alert: string; expr: string; labels: Record<string, string> }[] }[];
      };
      for (const rule of spec.groups[0]!.rules)
        assert.equal(rule.labels['team'], 'platform', 'alertLabels');
      const expiring = spec.groups[0]!.rules.find(
        (r) => r.alert === 'PrestopInjectorCertificateExpiring',
      )!;
      assert.match(expiring.expr, /< 1814400$/, '21 days');
    });

    it('refuse a broken rule (the checker is no rubber stamp)', async () => {
      const broken = structuredClone(findObject(renders.get('monitoring')!, 'PrometheusRule'));
      const groups = (broken['spec'] as { groups: { rules: { expr: string }[] }[] }).groups;
      groups[0]!.rules[0]!.expr = 'sum(rate(x[5m])';
      await assert.rejects(
        checkPrometheusRules(tools, broken, scratch!.dir),
        /unclosed left parenthesis/,
      );
    });

    it('select series the webhook and the API server really export', async () => {
      // The webhook's own series, from a webhook watching this API server.
      const webhook = await startServe({ kubeconfig: cp!.kubeconfigPath });
      let webhookMetrics: string;
      try {
        // A request that is not a review: the malformed-requests series appears.
        const status = await new Promise<number>((resolve, reject) => {
          const req = https.request(
            webhook.url,
            { method: 'POST', ca: webhook.certs.caPem, headers: { 'content-type': 'text/plain' } },
            (res) => {
              res.resume();
              resolve(res.statusCode ?? 0);
            },
          );
          req.on('error', reject);
          req.end('not a review');
        });
        assert.equal(status, 415);
        webhookMetrics = (await webhook.health('/metrics')).body;
      } finally {
        await webhook.stop();
      }
      // The API server's: make it fail open on, then be refused by, a
      // webhook of the chart's name that cannot be reached.
      const closed = await getFreePort();
      await createNamespace(cp!, 'alert-probe');
      for (const failurePolicy of ['Ignore', 'Fail'] as const) {
        await registerWebhook(cp!, {
          name: `alert-probe-${failurePolicy.toLowerCase()}`,
          webhookName: 'pods.prestop-injector.io',
          url: `https://127.0.0.1:${closed}/mutate`,
          caBundlePem: cp!.caPem,
          failurePolicy,
        });
        await new Promise((resolve) => setTimeout(resolve, 1_500));
        const res = await createObject(cp!, {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name: `probe-${failurePolicy.toLowerCase()}`, namespace: 'alert-probe' },
          spec: { containers: [{ name: 'app', image: 'nginx:1.27' }] },
        } as KubeObject);
        assert.equal(res.status, failurePolicy === 'Ignore' ? 201 : 500, JSON.stringify(res.body));
        await deleteWebhook(cp!, `alert-probe-${failurePolicy.toLowerCase()}`);
      }
      const apiserverMetrics = (
        await httpGet(`${cp!.server}/metrics`, { ca: cp!.caPem, token: cp!.adminToken })
      ).body;
      const series = parseSeries(webhookMetrics + apiserverMetrics);
      // Labels Prometheus adds when it scrapes; `up` is its own series.
      const targetLabels = new Set(['namespace', 'pod']);
      for (const rule of rules.get('monitoring')!) {
        for (const selector of rule.selectors) {
          const metric = selector.find((m) => m.name === '__name__')!.value;
          if (metric === 'up') continue;
          const matchers = selector.filter(
            (m) => m.name !== '__name__' && !targetLabels.has(m.name),
          );
          const matching = series.filter(
            (s) => s.name === metric && matchers.every((m) => matches(m, s.labels[m.name] ?? '')),
          );
          assert.ok(
            matching.length > 0,
            `${rule.name}: ${metric}{${matchers.map((m) => `${m.name}${m.type}"${m.value}"`).join(',')}} selects a real series`,
          );
        }
      }
    });
  });

  describe('Pod Security Standards', () => {
    const RESTRICTED = 'psa-restricted';

    before(async () => {
      await createNamespace(cp!, RESTRICTED, undefined, {
        'pod-security.kubernetes.io/enforce': 'restricted',
        'pod-security.kubernetes.io/enforce-version': 'latest',
        'pod-security.kubernetes.io/warn': 'restricted',
        'pod-security.kubernetes.io/warn-version': 'latest',
      });
    });

    /** Every pod the chart makes (webhook, helm test, uninstall hook), as a Pod. */
    const podsOf = (docs: KubeObject[], prefix: string): KubeObject[] => {
      const fromTemplate = (doc: KubeObject, name: string) => {
        const template = (
          doc['spec'] as { template: { metadata: KubeObject['metadata']; spec: unknown } }
        ).template;
        return {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name, labels: template.metadata.labels ?? {} },
          spec: template.spec,
        } as KubeObject;
      };
      const pods = [fromTemplate(findObject(docs, 'Deployment'), `${prefix}-webhook`)];
      const job = docs.find((d) => d.kind === 'Job');
      if (job) pods.push(fromTemplate(job, `${prefix}-uninstall`));
      const test = findObject(docs, 'Pod');
      pods.push({
        ...test,
        metadata: { ...test.metadata, name: `${prefix}-test`, namespace: RESTRICTED },
      });
      return pods;
    };

    it('admits every pod of every set under "restricted" with no warnings, except host networking', async () => {
      let index = 0;
      for (const [name, docs] of renders) {
        for (const pod of podsOf(docs, `p${index++}`)) {
          const res = await createObject(cp!, pod, { namespace: RESTRICTED, dryRun: true });
          if (name === 'host-network' && pod.metadata.name.endsWith('-webhook')) {
            assert.equal(
              res.status,
              403,
              'Pod Security refuses host networking, as the chart README says',
            );
            assert.match(String(res.body.message), /host namespaces \(hostNetwork=true\)/);
            continue;
          }
          assert.equal(
            res.status,
            201,
            `${name} ${pod.metadata.name}: ${JSON.stringify(res.body)}`,
          );
          assert.deepEqual(
            res.warnings,
            [],
            `${name} ${pod.metadata.name}: no PodSecurity warnings`,
          );
        }
      }
    });

    it('the same check refuses a pod that breaks the profile (control)', async () => {
      const [pod] = podsOf(renders.get('default')!, 'loosened');
      const spec = structuredClone(pod!['spec']) as PodSpec;
      delete spec.containers[0]!.securityContext['allowPrivilegeEscalation'];
      const res = await createObject(cp!, { ...pod!, spec } as KubeObject, {
        namespace: RESTRICTED,
      });
      assert.equal(res.status, 403);
      assert.match(String(res.body.message), /violates PodSecurity "restricted:latest"/);
    });
  });

  describe('installed and upgraded with helm (no pods run here)', () => {
    const NS = 'install-upgrade';
    // The API server never calls this release's webhook: it sees no namespace.
    const quiet = setJsonArgs({
      'image.repository': 'registry.example.com/prestop-injector',
      'webhook.namespaceSelector': { matchLabels: { never: 'matches' } },
    });

    after(async () => {
      await runCommand(tools.helm, ['uninstall', RELEASE, '--namespace', NS, '--no-hooks'], {
        env,
      });
    });

    it('keeps what the webhook wrote (certificates, caBundle, Lease) across upgrades', async () => {
      await helm(['install', RELEASE, chartDir, '--namespace', NS, '--create-namespace', ...quiet]);
      // What the certificate writer does, as the webhook's ServiceAccount would.
      const merge = (urlPath: string, body: unknown) =>
        api(cp!, 'PATCH', urlPath, body, 'application/merge-patch+json');
      const written = {
        'ca.crt': b64('ca'),
        'ca.key': b64('key'),
        'tls.crt': b64('crt'),
        'tls.key': b64('k'),
      };
      assert.equal(
        (await merge(`/api/v1/namespaces/${NS}/secrets/${RELEASE}-tls`, { data: written })).status,
        200,
      );
      assert.equal(
        (
          await merge(`/apis/coordination.k8s.io/v1/namespaces/${NS}/leases/${RELEASE}-tls`, {
            spec: { holderIdentity: 'pod-a_1' },
          })
        ).status,
        200,
      );
      const strategic = await api(
        cp!,
        'PATCH',
        `/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${RELEASE}`,
        {
          webhooks: [
            { name: 'pods.prestop-injector.io', clientConfig: { caBundle: b64('bundle') } },
          ],
        },
        'application/strategic-merge-patch+json',
      );
      assert.equal(strategic.status, 200, JSON.stringify(strategic.body));

      const state = async () => {
        const secret = await readObject(cp!, {
          apiVersion: 'v1',
          kind: 'Secret',
          name: `${RELEASE}-tls`,
          namespace: NS,
        });
        const lease = await readObject(cp!, {
          apiVersion: 'coordination.k8s.io/v1',
          kind: 'Lease',
          name: `${RELEASE}-tls`,
          namespace: NS,
        });
        const mwc = await readObject(cp!, {
          apiVersion: 'admissionregistration.k8s.io/v1',
          kind: 'MutatingWebhookConfiguration',
          name: RELEASE,
        });
        const webhook = (mwc!['webhooks'] as Webhook[])[0]!;
        return {
          data: secret!['data'],
          holder: (lease!['spec'] as { holderIdentity?: string }).holderIdentity,
          caBundle: webhook.clientConfig.caBundle,
          failurePolicy: webhook.failurePolicy,
        };
      };
      assert.deepEqual(await state(), {
        data: written,
        holder: 'pod-a_1',
        caBundle: b64('bundle'),
        failurePolicy: 'Ignore',
      });
      // A change to the webhook configuration itself, and a plain upgrade.
      await helm([
        'upgrade',
        RELEASE,
        chartDir,
        '--namespace',
        NS,
        '--reuse-values',
        '--set',
        'webhook.failurePolicy=Fail',
        '--set',
        'config.delaySeconds=15',
      ]);
      assert.deepEqual(await state(), {
        data: written,
        holder: 'pod-a_1',
        caBundle: b64('bundle'),
        failurePolicy: 'Fail',
      });
      await helm(['upgrade', RELEASE, chartDir, '--namespace', NS, '--reuse-values']);
      assert.deepEqual(await state(), {
        data: written,
        holder: 'pod-a_1',
        caBundle: b64('bundle'),
        failurePolicy: 'Fail',
      });
    });
  });

  describe('the helm test pod', () => {
    const SERVICE_HOST = `${RELEASE.toUpperCase().replace(/-/g, '_')}_SERVICE_HOST`;
    const SERVICE_PORT = `${RELEASE.toUpperCase().replace(/-/g, '_')}_SERVICE_PORT_WEBHOOK`;
    const runTestPod = async (extraEnv: Record<string, string>) => {
      const test = findObject(renders.get('default')!, 'Pod');
      const container = (test['spec'] as PodSpec).containers[0]!;
      const podEnv = Object.fromEntries(container.env.map((e) => [e.name, e.value ?? '']));
      return runCommand(process.execPath, container.args!, {
        env: { ...podEnv, ...extraEnv },
        timeoutMs: 30_000,
      });
    };

    it('passes against a real webhook behind the Service name and fails when it should', async () => {
      const serviceHost = `${RELEASE}.${NAMESPACE}.svc`;
      const certs = makeDevCerts({ extraSans: [serviceHost] });
      const webhook = await startServe({
        certs,
        args: ['--inject-default', 'disabled', '--kube-version', '1.37'],
      });
      try {
        const ca = path.join(scratch!.dir, 'webhook-ca.crt');
        await fsp.writeFile(ca, webhook.certs.caPem);
        const service = {
          [SERVICE_HOST]: '127.0.0.1',
          [SERVICE_PORT]: String(webhook.webhookPort),
          WEBHOOK_CA: ca,
        };
        const ok = await runTestPod(service);
        assert.equal(ok.code, 0, ok.stderr);
        assert.match(
          ok.stdout,
          new RegExp(
            `^ok: https://${serviceHost.replace(/\./g, '\\.')}/mutate \\(127\\.0\\.0\\.1:\\d+\\) answered with \\d+ patch operations`,
          ),
        );
        const down = await runTestPod({ ...service, [SERVICE_PORT]: String(await getFreePort()) });
        assert.equal(down.code, 1);
        assert.match(down.stderr, /FAIL: .*ECONNREFUSED/);
        const wrongCa = path.join(scratch!.dir, 'other-ca.crt');
        await fsp.writeFile(wrongCa, cp!.caPem);
        const untrusted = await runTestPod({ ...service, WEBHOOK_CA: wrongCa });
        assert.equal(untrusted.code, 1, 'a certificate from another CA fails the test');
        const noService = await runTestPod({ WEBHOOK_CA: ca });
        assert.match(
          noService.stderr,
          new RegExp(
            `FAIL: no address for ${serviceHost.replace(/\./g, '\\.')}: ${SERVICE_HOST} is not set`,
          ),
        );
      } finally {
        await webhook.stop();
      }
    });
  });
});

interface Series {
  name: string;
  labels: Record<string, string>;
}

/** Series of a Prometheus text exposition (names and labels; values are not needed). */
function parseSeries(text: string): Series[] {
  const out: Series[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? /.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const pair of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[pair[1]!] = pair[2]!;
    out.push({ name: m[1]!, labels });
  }
  return out;
}

/** A PromQL label matcher: = != =~ !~, regexes fully anchored. */
function matches(m: { type: string; value: string }, actual: string): boolean {
  switch (m.type) {
    case '=':
      return actual === m.value;
    case '!=':
      return actual !== m.value;
    case '=~':
      return new RegExp(`^(?:${m.value})$`).test(actual);
    case '!~':
      return !new RegExp(`^(?:${m.value})$`).test(actual);
    default:
      throw new Error(`unknown matcher type ${m.type}`);
  }
}
