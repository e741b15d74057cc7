// The path a user takes, end to end: the image as the Dockerfile builds it,
// then the README's install section, command by command, against a real
// kube-apiserver: helm install, rollout status, helm test, opt a namespace
// in, create pods, upgrade, uninstall.
//
// No kubelet or controller runs here, so a stand-in (test/support/chart.ts)
// runs the chart's Deployment as a process from the image layout, with the
// env, Secret files, ServiceAccount token and uid the pod would have, and
// reports it ready; the API server reaches it through webhook.url, the one
// value the test adds.

import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import https from 'node:https';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { admissionRecords } from '../support/admission-log.ts';
import {
  ensureTools,
  startControlPlane,
  waitFor,
  type ControlPlane,
  type Tools,
} from '../support/control-plane.ts';
import {
  api,
  ClusterStandIn,
  createObject,
  listObjects,
  normaliseOutput,
  readInstallSection,
  readObject,
  repoRoot,
  runCommand,
  scratchDir,
  toolEnvironment,
  type CommandResult,
  type KubeObject,
  type ReadmeBlock,
} from '../support/chart.ts';
import {
  buildLikeDockerfile,
  containerProcess,
  numericUser,
  type BuiltImage,
} from '../support/dockerfile.ts';
import { getFreePort } from '../support/free-port.ts';

const RELEASE = 'prestop-injector';
const NAMESPACE = 'prestop-injector';
const APP_NAMESPACE = 'shop';
const STATUS = 'prestop-injector.io/status';

const readme = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
const blocks = readInstallSection(readme);
const packageJson = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as {
  version: string;
};

/** The README block whose commands include `pattern`. */
function blockWith(pattern: RegExp): ReadmeBlock {
  const found = blocks.filter((b) => b.commands.some((c) => pattern.test(c)));
  assert.equal(found.length, 1, `exactly one README install block runs ${pattern}`);
  return found[0]!;
}

interface PodView {
  grace: number | undefined;
  sleep: number | undefined;
  preStop: unknown;
  status: string | undefined;
}

function podView(pod: KubeObject): PodView {
  const spec = pod['spec'] as {
    terminationGracePeriodSeconds?: number;
    containers: { lifecycle?: { preStop?: { sleep?: { seconds: number } } } }[];
  };
  const preStop = spec.containers[0]?.lifecycle?.preStop;
  return {
    grace: spec.terminationGracePeriodSeconds,
    sleep: preStop?.sleep?.seconds,
    preStop,
    status: pod.metadata.annotations?.[STATUS],
  };
}

describe('the image and the chart, installed as the README says', () => {
  let tools: Tools;
  let cp: ControlPlane | undefined;
  let image: BuiltImage;
  let standIn: ClusterStandIn | undefined;
  let scratch: Awaited<ReturnType<typeof scratchDir>> | undefined;
  let env: NodeJS.ProcessEnv;
  let devValues: string;
  let webhookPort: number;
  let caPem = '';
  const ran = new Set<ReadmeBlock>();

  const webhookLog = (): string => {
    const proc = standIn?.process(RELEASE);
    return proc ? proc.logTail(400) : '(no webhook process)';
  };
  const admissionsFor = (pod: string): Record<string, unknown>[] =>
    admissionRecords(
      webhookLog()
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as Record<string, unknown>),
    ).filter((entry) => entry['pod'] === pod);

  const waitForAdmission = (pod: string) =>
    waitFor(`the webhook to log the admission of ${pod}`, 10_000, async () => {
      return admissionsFor(pod).length > 0;
    });

  /** An AdmissionReview sent straight to the webhook process, as the API server would. */
  const sendReview = (ca: string, podName: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const body = JSON.stringify({
        apiVersion: 'admission.k8s.io/v1',
        kind: 'AdmissionReview',
        request: {
          uid: `marker-${Date.now()}`,
          kind: { group: '', version: 'v1', kind: 'Pod' },
          resource: { group: '', version: 'v1', resource: 'pods' },
          namespace: APP_NAMESPACE,
          operation: 'CREATE',
          object: {
            apiVersion: 'v1',
            kind: 'Pod',
            metadata: { name: podName, namespace: APP_NAMESPACE },
            spec: { containers: [{ name: 'app', image: 'nginx:1.27' }] },
          },
          userInfo: { username: 'e2e' },
        },
      });
      const req = https.request(
        `https://127.0.0.1:${webhookPort}/mutate`,
        { method: 'POST', ca, headers: { 'content-type': 'application/json' } },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        },
      );
      req.on('error', reject);
      req.end(body);
    });

  const createPod = async (pod: Omit<KubeObject, 'apiVersion' | 'kind'>): Promise<KubeObject> => {
    const res = await createObject(cp!, { apiVersion: 'v1', kind: 'Pod', ...pod } as KubeObject);
    assert.equal(res.status, 201, JSON.stringify(res.body));
    return res.body;
  };

  const diagnostics = (): string =>
    [
      `----- stand-in events -----\n${standIn?.events.join('\n') ?? ''}`,
      `----- webhook process log -----\n${webhookLog().split('\n').slice(-30).join('\n')}`,
      cp ? cp.logTails(15) : '',
    ].join('\n');

  /** Runs one README block, command by command; returns each command's result. */
  const runBlock = async (block: ReadmeBlock): Promise<CommandResult[]> => {
    ran.add(block);
    const results: CommandResult[] = [];
    for (const command of block.commands) {
      // The one addition: where the webhook really runs (see the file comment).
      const line = /^helm (install|upgrade) /.test(command)
        ? `${command} --values ${devValues}`
        : command;
      console.log(`$ ${line}`);
      const result = await runCommand('bash', ['-c', line], { env, timeoutMs: 180_000 });
      if (result.code !== 0) {
        assert.fail(
          `README command failed (exit ${result.code}): ${line}\n${result.stdout}${result.stderr}\n${diagnostics()}`,
        );
      }
      results.push(result);
    }
    if (block.expectedOutput !== undefined) {
      assert.equal(
        normaliseOutput(results.at(-1)!.stdout),
        normaliseOutput(block.expectedOutput),
        'the last command prints what the README shows',
      );
    }
    return results;
  };

  const readPod = async (namespace: string, name: string): Promise<KubeObject> => {
    const pod = await readObject(cp!, { apiVersion: 'v1', kind: 'Pod', name, namespace });
    assert.ok(pod, `pod ${namespace}/${name} is stored`);
    return pod;
  };

  before(async () => {
    tools = await ensureTools();
    scratch = await scratchDir('chart-install');
    image = await buildLikeDockerfile(repoRoot, path.join(scratch.dir, 'image'));
    console.log(`image built as the Dockerfile builds it:\n  ${image.steps.join('\n  ')}`);
    cp = await startControlPlane();
    env = await toolEnvironment(tools, cp, scratch.dir);
    webhookPort = await getFreePort();
    const healthPort = await getFreePort();
    devValues = path.join(scratch.dir, 'dev-values.yaml');
    await fsp.writeFile(
      devValues,
      `# Added by the e2e test: no pod runs, the stand-in's process does.\n` +
        `webhook:\n  url: https://127.0.0.1:${webhookPort}/mutate\n`,
    );
    standIn = new ClusterStandIn({
      cp,
      image: image.runtime,
      namespace: NAMESPACE,
      hostPorts: { webhook: webhookPort, health: healthPort },
      // A pod has its own IP; here, loopback and free ports.
      envOverrides: {
        PRESTOP_HOST: '127.0.0.1',
        PRESTOP_PORT: String(webhookPort),
        PRESTOP_HEALTH_PORT: String(healthPort),
      },
      dir: path.join(scratch.dir, 'stand-in'),
    });
    standIn.start();
  });

  after(async () => {
    await standIn?.stop();
    await cp?.stop();
    await scratch?.remove();
  });

  describe('the image', () => {
    it('holds the compiled server and production dependencies only', async () => {
      const runtime = image.runtime;
      assert.match(runtime.image, /distroless\/nodejs24/, 'a small runtime base with Node 24');
      assert.equal(runtime.base.shell, false, 'no shell in the runtime image');
      const app = path.join(runtime.root, runtime.workdir);
      // The lockfile marks what only development needs ("dev": true).
      const lock = JSON.parse(
        await fsp.readFile(path.join(repoRoot, 'package-lock.json'), 'utf8'),
      ) as { packages: Record<string, { dev?: boolean; optional?: boolean }> };
      let production = 0;
      for (const [key, entry] of Object.entries(lock.packages)) {
        if (!key.startsWith('node_modules/')) continue;
        const present = fs.existsSync(path.join(app, key));
        if (entry.dev) assert.ok(!present, `no development package ${key} in the runtime`);
        else if (!entry.optional) {
          assert.ok(present, `production package ${key} in the runtime`);
          production++;
        }
      }
      assert.ok(production > 10, 'the lockfile lists production packages');
      for (const dev of ['typescript', 'eslint', 'prettier', 'fast-check', 'node'])
        assert.ok(!fs.existsSync(path.join(app, 'node_modules', dev)), `no ${dev}`);
      const top = (await fsp.readdir(app)).sort();
      assert.deepEqual(top, ['dist', 'node_modules', 'package.json'], 'nothing but what runs');
      assert.ok(fs.existsSync(path.join(app, 'dist', 'cli.js')), 'dist/cli.js built');
      assert.deepEqual(
        numericUser(runtime),
        { uid: 65532, gid: 65532 },
        'USER is numeric non-root',
      );
      assert.equal(runtime.env['NODE_ENV'], 'production');
      assert.deepEqual(runtime.exposed.sort(), [8081, 8443]);
    });

    it('runs its entrypoint from that layout as uid 65532', () => {
      const { uid, gid } = numericUser(image.runtime);
      const version = containerProcess(image.runtime, { args: ['dist/cli.js', 'version'] });
      const out = execFileSync(version.file, version.args, {
        cwd: version.cwd,
        uid,
        gid,
        env: image.runtime.env,
        encoding: 'utf8',
      });
      assert.match(out, new RegExp(`\\b${packageJson.version.replace(/\./g, '\\.')}\\b`));
      // The default CMD is the server; the chart's Deployment runs it below.
      assert.deepEqual(image.runtime.cmd, ['dist/cli.js', 'serve']);
    });
  });

  describe('the README install section, against a real API server', () => {
    it('installs; the rollout completes and helm test passes', async () => {
      const [install] = await runBlock(blockWith(/^helm install /));
      assert.match(
        install!.stdout,
        /kubectl annotate namespace NAMESPACE prestop-injector\.io\/inject=enabled/,
        'NOTES.txt tells how to opt a namespace in',
      );
      // helm test's pod ran to completion (its own output is in its log).
      assert.ok(
        standIn!.events.some((e) => /^test pod prestop-injector-test: exit 0, Succeeded$/.test(e)),
        `the helm test pod succeeded: ${standIn!.events.join('; ')}`,
      );
      assert.match(
        standIn!.testPodLog('prestop-injector-test'),
        /^ok: https:\/\/127\.0\.0\.1:\d+\/mutate answered with \d+ patch operations$/m,
      );

      const mwc = await readObject(cp!, {
        apiVersion: 'admissionregistration.k8s.io/v1',
        kind: 'MutatingWebhookConfiguration',
        name: RELEASE,
      });
      assert.ok(mwc, 'webhook configuration installed');
      const webhook = (mwc['webhooks'] as Record<string, unknown>[])[0]!;
      const clientConfig = webhook['clientConfig'] as { url?: string; caBundle?: string };
      assert.equal(clientConfig.url, `https://127.0.0.1:${webhookPort}/mutate`);
      const tls = await readObject(cp!, {
        apiVersion: 'v1',
        kind: 'Secret',
        name: `${RELEASE}-tls`,
        namespace: NAMESPACE,
      });
      const data = tls!['data'] as Record<string, string>;
      assert.equal(clientConfig.caBundle, data['ca.crt'], 'caBundle is the chart CA');
      caPem = Buffer.from(data['ca.crt']!, 'base64').toString();
      const leaf = new X509Certificate(Buffer.from(data['tls.crt']!, 'base64'));
      const ca = new X509Certificate(Buffer.from(data['ca.crt']!, 'base64'));
      assert.ok(leaf.verify(ca.publicKey), 'serving certificate signed by the CA');
      assert.equal(leaf.checkHost(`${RELEASE}.${NAMESPACE}.svc`), `${RELEASE}.${NAMESPACE}.svc`);
      assert.equal(leaf.checkIP('127.0.0.1'), '127.0.0.1', 'and the webhook.url host');

      // The process runs as the pod's user, not as root.
      const pid = standIn!.process(RELEASE)!.child.pid!;
      const uidLine = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^Uid:\s+(\d+)/m);
      assert.equal(uidLine?.[1], '65532', 'webhook runs as uid 65532');
    });

    it('opts a namespace in; pods follow their annotations', async () => {
      await runBlock(blockWith(/^kubectl annotate namespace /));
      const web = podView(await readPod(APP_NAMESPACE, 'web'));
      assert.equal(web.sleep, 10, 'namespace opt-in: default delay');
      assert.equal(web.grace, 40);
      assert.ok(web.status, 'status annotation written');
      const apiPod = podView(await readPod(APP_NAMESPACE, 'api'));
      assert.deepEqual([apiPod.sleep, apiPod.grace], [20, 50], 'pod annotation wins');
      const tool = podView(await readPod(APP_NAMESPACE, 'tool'));
      assert.deepEqual([tool.preStop, tool.grace, tool.status], [undefined, 30, undefined]);

      // Batch pods are left alone too...
      const batch = await createPod({
        metadata: { name: 'batch', namespace: APP_NAMESPACE },
        spec: { restartPolicy: 'Never', containers: [{ name: 'app', image: 'busybox:1.36' }] },
      });
      assert.equal(podView(batch).preStop, undefined);
      // ...but a pod that carries an earlier injection is always sent: here
      // it opted out since, and the webhook undoes its own changes.
      const stored = await readPod(APP_NAMESPACE, 'web');
      const copied = await createPod({
        metadata: {
          name: 'copied',
          namespace: APP_NAMESPACE,
          annotations: { ...stored.metadata.annotations, 'prestop-injector.io/inject': 'disabled' },
        },
        spec: stored['spec'],
      });
      const undone = podView(copied);
      assert.deepEqual([undone.preStop, undone.grace, undone.status], [undefined, 30, undefined]);

      // matchConditions: the API server did not even call the webhook for the
      // opted-out and batch pods (their lines would precede copied's).
      await waitForAdmission('copied');
      assert.equal(admissionsFor('web').length, 1, 'one admission for web');
      assert.equal(admissionsFor('tool').length, 0, 'no admission for the opted-out pod');
      assert.equal(admissionsFor('batch').length, 0, 'no admission for the batch pod');

      // A namespace that did not opt in: asked, and untouched.
      const ns = await createObject(cp!, {
        apiVersion: 'v1',
        kind: 'Namespace',
        metadata: { name: 'not-opted-in' },
      });
      assert.equal(ns.status, 201);
      const plain = podView(
        await createPod({
          metadata: { name: 'plain', namespace: 'not-opted-in' },
          spec: { containers: [{ name: 'app', image: 'nginx:1.27' }] },
        }),
      );
      assert.deepEqual([plain.preStop, plain.grace, plain.status], [undefined, 30, undefined]);
      await waitForAdmission('plain');
    });

    it('runs the webhook as the chart ServiceAccount, which may only read namespaces', async () => {
      const user = `system:serviceaccount:${NAMESPACE}:${RELEASE}`;
      const can = async (verb: string, resource: string, group = ''): Promise<boolean> => {
        const res = await api<{ status?: { allowed?: boolean } }>(
          cp!,
          'POST',
          '/apis/authorization.k8s.io/v1/subjectaccessreviews',
          {
            apiVersion: 'authorization.k8s.io/v1',
            kind: 'SubjectAccessReview',
            spec: {
              user,
              groups: ['system:serviceaccounts', `system:serviceaccounts:${NAMESPACE}`],
              resourceAttributes: { verb, resource, group },
            },
          },
        );
        assert.equal(res.status, 201);
        return res.body.status?.allowed === true;
      };
      for (const verb of ['get', 'list', 'watch'])
        assert.ok(await can(verb, 'namespaces'), `may ${verb} namespaces`);
      for (const [verb, resource, group] of [
        ['update', 'namespaces', ''],
        ['patch', 'namespaces', ''],
        ['list', 'pods', ''],
        ['get', 'secrets', ''],
        ['list', 'secrets', ''],
        ['create', 'pods', ''],
        ['update', 'mutatingwebhookconfigurations', 'admissionregistration.k8s.io'],
        ['list', 'deployments', 'apps'],
      ] as const) {
        assert.equal(await can(verb, resource, group), false, `may not ${verb} ${resource}`);
      }
      // And that identity was enough: the namespace cache synced (readyz) with
      // no permission errors.
      assert.doesNotMatch(webhookLog(), /forbidden/i);
    });

    it('upgrades without changing the CA or the serving certificate', async () => {
      const snapshot = async () => {
        const mwc = await readObject(cp!, {
          apiVersion: 'admissionregistration.k8s.io/v1',
          kind: 'MutatingWebhookConfiguration',
          name: RELEASE,
        });
        const tls = await readObject(cp!, {
          apiVersion: 'v1',
          kind: 'Secret',
          name: `${RELEASE}-tls`,
          namespace: NAMESPACE,
        });
        const deploy = await readObject(cp!, {
          apiVersion: 'apps/v1',
          kind: 'Deployment',
          name: RELEASE,
          namespace: NAMESPACE,
        });
        const template = (deploy!['spec'] as { template: { metadata: KubeObject['metadata'] } })
          .template;
        return {
          caBundle: (mwc!['webhooks'] as { clientConfig: { caBundle: string } }[])[0]!.clientConfig
            .caBundle,
          cert: (tls!['data'] as Record<string, string>)['tls.crt'],
          checksum: template.metadata.annotations?.['checksum/tls'],
        };
      };
      const before = await snapshot();
      const startsBefore = standIn!.starts(RELEASE);
      await runBlock(blockWith(/^helm upgrade /));
      const afterUpgrade = await snapshot();
      assert.ok(before.caBundle && before.cert && before.checksum);
      assert.equal(afterUpgrade.caBundle, before.caBundle, 'same CA bundle');
      assert.equal(afterUpgrade.cert, before.cert, 'same serving certificate');
      assert.equal(afterUpgrade.checksum, before.checksum, 'same certificate checksum');
      // The new setting rolled the pods (the env changed) and is live: the
      // README's output above showed a 15 s delay.
      assert.equal(standIn!.starts(RELEASE), startsBefore + 1, 'the webhook restarted once');
    });

    it('uninstalls: the webhook configuration goes, later pods are untouched', async () => {
      await runBlock(blockWith(/^helm uninstall /));
      const selector = `app.kubernetes.io/instance=${RELEASE}`;
      for (const [apiVersion, kind, namespace] of [
        ['admissionregistration.k8s.io/v1', 'MutatingWebhookConfiguration', undefined],
        ['rbac.authorization.k8s.io/v1', 'ClusterRole', undefined],
        ['rbac.authorization.k8s.io/v1', 'ClusterRoleBinding', undefined],
        ['apps/v1', 'Deployment', NAMESPACE],
        ['v1', 'Secret', NAMESPACE],
        ['v1', 'Service', NAMESPACE],
        ['v1', 'ServiceAccount', NAMESPACE],
        ['policy/v1', 'PodDisruptionBudget', NAMESPACE],
      ] as const) {
        const left = await listObjects(cp!, {
          apiVersion,
          kind,
          labelSelector: selector,
          ...(namespace ? { namespace } : {}),
        });
        assert.deepEqual(
          left.map((o) => o.metadata.name),
          [],
          `no ${kind} of the release is left`,
        );
      }
      // The stand-in keeps the webhook process running: were the API server
      // still calling it, the pod below would be mutated.
      assert.equal(standIn!.process(RELEASE)!.hasExited(), false, 'webhook process still up');
      // The API server drops the configuration from its cache a moment after
      // the delete: wait for an opted-in dry-run pod to come back untouched.
      await waitFor('the API server to stop calling the webhook', 15_000, async () => {
        const probe = await createObject(
          cp!,
          {
            apiVersion: 'v1',
            kind: 'Pod',
            metadata: { name: 'probe', namespace: APP_NAMESPACE },
            spec: { containers: [{ name: 'app', image: 'nginx:1.27' }] },
          } as KubeObject,
          { dryRun: true },
        );
        return probe.status === 201 && podView(probe.body).status === undefined;
      });
      const pod = podView(
        await createPod({
          metadata: { name: 'after-uninstall', namespace: APP_NAMESPACE },
          spec: { containers: [{ name: 'app', image: 'nginx:1.27' }] },
        }),
      );
      assert.deepEqual([pod.preStop, pod.grace, pod.status], [undefined, 30, undefined]);
      // A review sent straight to the process marks its log; a call for the
      // pod above would have been logged before it.
      assert.equal(await sendReview(caPem, 'marker'), 200);
      await waitForAdmission('marker');
      assert.equal(admissionsFor('after-uninstall').length, 0, 'the webhook was not called');
    });

    it('ran every block of the README install section', () => {
      assert.ok(blocks.length >= 4, 'the section has its blocks');
      assert.equal(ran.size, blocks.length, 'no README block was left out');
    });
  });
});
