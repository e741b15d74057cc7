// The chart on a real node, as a user runs it: the webhook's image built
// from the Dockerfile by buildah and loaded into containerd under the name
// the README uses; the README's install section run command by command
// inside the node's network (helm, kubectl), with the chart's defaults. The
// webhook runs as two pods behind its Service, the API server calls it
// through the Service, `helm test` runs its pod, and the webhook's own log
// (kubectl logs) shows it answered. Then:
//
//   - the README's `helm upgrade` rolls the webhook's pods while a pod is
//     created every 100 ms: none is admitted without its hook;
//   - a second install with failurePolicy Fail and certificates that live 30
//     seconds: renewed by the webhook itself, both webhook pods evicted
//     (the PodDisruptionBudget lets one go at a time), then `helm uninstall`
//     (its pre-delete hook removes the webhook configuration first), all
//     while pods are created every 100 ms: no creation fails.
//
// One node for the whole file.

import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseDocument } from 'yaml';
import { ensureTools, type Tools } from '../support/cluster/binaries.ts';
import {
  mustRun,
  netnsArgv,
  runCommand,
  waitFor,
  type CommandResult,
} from '../support/cluster/processes.ts';
import {
  api,
  chartDir,
  createObject,
  listObjects,
  normaliseOutput,
  readInstallSection,
  readObject,
  repoRoot,
  scratchDir,
  toolEnvironment,
  type KubeObject,
  type ReadmeBlock,
} from '../support/chart.ts';
import { startNode, type RealNode } from '../support/node/node.ts';
import { buildWebhookImage, type WebhookImage } from '../support/node/webhook-image.ts';

const RELEASE = 'prestop-injector';
const NAMESPACE = 'prestop-injector';
const SHOP = 'shop';
const LOAD = 'load';
const STATUS = 'prestop-injector.io/status';
const appVersion = (
  parseDocument(fs.readFileSync(path.join(chartDir, 'Chart.yaml'), 'utf8')).toJS() as {
    appVersion: string;
  }
).appVersion;
/** What the README's values name: image.repository, and the chart's appVersion as the tag. */
const README_IMAGE = `registry.example.com/prestop-injector:${appVersion}`;

const blocks = readInstallSection(fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8'));

/** The README block whose commands include `pattern`. */
function blockWith(pattern: RegExp): ReadmeBlock {
  const found = blocks.filter((b) => b.commands.some((c) => pattern.test(c)));
  assert.equal(found.length, 1, `exactly one README install block runs ${pattern}`);
  return found[0]!;
}

function podView(pod: KubeObject) {
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

interface LoadRecord {
  name: string;
  /** ms since the loop started */
  at: number;
  status: number;
  mutated: boolean;
  message: string;
}

describe('the chart on a real node, as the README installs it', () => {
  let tools: Tools;
  let node: RealNode | undefined;
  let image: WebhookImage;
  let scratch: Awaited<ReturnType<typeof scratchDir>> | undefined;
  let env: NodeJS.ProcessEnv;
  const ran = new Set<ReadmeBlock>();

  /** A shell command inside the node's network, with helm and kubectl on PATH. */
  const shell = (command: string, timeoutMs = 180_000): Promise<CommandResult> => {
    const [enter, ...enterArgs] = netnsArgv(node!.netns);
    return runCommand(enter!, [...enterArgs, 'sh', '-c', command], { env, timeoutMs });
  };

  const diagnostics = async (): Promise<string> => {
    const state = await shell(
      `kubectl get pods -A -o wide; kubectl --namespace ${NAMESPACE} describe pods; kubectl --namespace ${NAMESPACE} logs --prefix --tail=30 -l app.kubernetes.io/name=prestop-injector`,
    );
    return `${state.stdout}${state.stderr}\n${node!.logTails(15)}`;
  };

  /** Runs one README block, command by command; checks the output the README shows. */
  const runBlock = async (block: ReadmeBlock): Promise<CommandResult[]> => {
    ran.add(block);
    const results: CommandResult[] = [];
    for (const command of block.commands) {
      console.log(`$ ${command}`);
      const result = await shell(command);
      if (result.code !== 0)
        assert.fail(
          `README command failed (exit ${result.code}): ${command}\n${result.stdout}${result.stderr}\n${await diagnostics()}`,
        );
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

  const webhookPods = async (namespace: string, release: string) =>
    (
      await listObjects(node!.controlPlane, {
        apiVersion: 'v1',
        kind: 'Pod',
        namespace,
        labelSelector: `app.kubernetes.io/instance=${release},app.kubernetes.io/name=prestop-injector`,
      })
    ).filter((p) => p.metadata['deletionTimestamp'] === undefined);

  /** The webhook's own log lines, from inside its pods (kubectl logs), parsed. */
  const webhookLog = async (namespace: string, pod: string): Promise<Record<string, unknown>[]> =>
    (await node!.kubectl('--namespace', namespace, 'logs', pod))
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);

  /** Creates an opted-in pod every 100 ms (never run: bound to no node) and records each answer. */
  let loops = 0;
  const podLoop = () => {
    const prefix = `p${++loops}`;
    const records: LoadRecord[] = [];
    const started = Date.now();
    let stopped = false;
    const done = (async () => {
      for (let n = 0; !stopped; n++) {
        const begun = Date.now();
        const name = `${prefix}-${n}`;
        const res = await createObject(node!.controlPlane, {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name, namespace: LOAD },
          spec: {
            nodeName: 'not-a-node',
            containers: [{ name: 'app', image: node!.images.testApp.ref }],
          },
        } as KubeObject).catch((err: Error) => ({
          status: 0,
          body: { message: err.message } as KubeObject & { message?: string },
        }));
        records.push({
          name,
          at: begun - started,
          status: res.status,
          mutated: res.status === 201 && res.body.metadata.annotations?.[STATUS] !== undefined,
          message: String(res.body.message ?? ''),
        });
        await new Promise((resolve) =>
          setTimeout(resolve, Math.max(0, 100 - (Date.now() - begun))),
        );
      }
    })();
    return {
      records,
      elapsed: () => Date.now() - started,
      async stop() {
        stopped = true;
        await done;
      },
    };
  };

  before(async () => {
    tools = await ensureTools();
    const begun = Date.now();
    image = await buildWebhookImage();
    console.log(
      image.cached
        ? `webhook image ${image.ref} from the cache`
        : `webhook image ${image.ref} built by buildah in ${image.buildSeconds.toFixed(1)} s`,
    );
    node = await startNode();
    await node.importImage(image);
    // The name the README's values give it: with the chart's default
    // imagePullPolicy (IfNotPresent) the kubelet takes it from containerd.
    for (const member of node.nodes)
      await member.containerd.ctr(
        '-n',
        'k8s.io',
        'images',
        'tag',
        '--force',
        image.ref,
        README_IMAGE,
      );
    scratch = await scratchDir('chart-node');
    env = await toolEnvironment(tools, node.kubeconfig, scratch.dir);
    const v = node.versions;
    console.log(
      `node Ready and image loaded as ${README_IMAGE} in ${((Date.now() - begun) / 1000).toFixed(1)} s: ` +
        `kubelet ${v.kubelets[node.nodes[0]!.name]}, kube-proxy ${v.kubeProxy}, kube-apiserver ${v.kubeApiserver}, ${v.containerd}, ${v.runc}`,
    );
    await node.kubectl('create', 'namespace', LOAD);
    await node.kubectl('annotate', 'namespace', LOAD, 'prestop-injector.io/inject=enabled');
  });

  after(async () => {
    await node?.stop();
    await scratch?.remove();
  });

  it('the image: production files only, non-root, source maps, OCI labels', async () => {
    const manifest = JSON.parse(await mustRun('tar', ['-xOf', image.tarball, 'manifest.json'])) as {
      Config: string;
      Layers: string[];
    }[];
    const config = JSON.parse(
      await mustRun('tar', ['-xOf', image.tarball, manifest[0]!.Config]),
    ) as {
      config: {
        User: string;
        Entrypoint: string[];
        Cmd: string[];
        WorkingDir: string;
        Labels: Record<string, string>;
      };
    };
    assert.equal(config.config.User, '65532:65532');
    assert.deepEqual(config.config.Entrypoint, ['/nodejs/bin/node', '--enable-source-maps']);
    assert.deepEqual(config.config.Cmd, ['dist/cli/main.js', 'serve']);
    assert.equal(config.config.Labels['org.opencontainers.image.version'], appVersion);
    assert.match(config.config.Labels['org.opencontainers.image.source'] ?? '', /^https:\/\//);
    assert.equal(config.config.Labels['org.opencontainers.image.licenses'], 'Apache-2.0');
    const files = new Set<string>();
    for (const layer of manifest[0]!.Layers) {
      const listed = await runCommand(
        'sh',
        ['-c', `tar -xOf "$0" "$1" | tar -t`, image.tarball, layer],
        { timeoutMs: 60_000 },
      );
      for (const file of listed.stdout.split('\n'))
        files.add(file.replace(/^\.?\//, '').replace(/\/$/, ''));
    }
    const top = [...files].filter((f) => /^app\/[^/]+$/.test(f)).sort();
    assert.deepEqual(
      top,
      ['app/dist', 'app/node_modules', 'app/package.json'],
      'nothing but what runs',
    );
    assert.ok(
      files.has('app/dist/cli/main.js') && files.has('app/dist/cli/main.js.map'),
      'the server, with its source map',
    );
    // The lockfile marks what only development needs ("dev": true).
    const lock = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { dev?: boolean; optional?: boolean }>;
    };
    let production = 0;
    for (const [key, entry] of Object.entries(lock.packages)) {
      if (!key.startsWith('node_modules/') || key.split('node_modules/').length > 2) continue;
      if (entry.dev) assert.ok(!files.has(`app/${key}`), `no development package ${key}`);
      else if (!entry.optional) {
        assert.ok(files.has(`app/${key}`), `production package ${key}`);
        production++;
      }
    }
    assert.ok(production > 10, 'the lockfile lists production packages');
    assert.ok(!files.has('bin/sh') && !files.has('bin/busybox'), 'no shell');
  });

  describe('the README install section', () => {
    it('installs: two webhook pods behind the Service, trusted by the API server; helm test passes', async () => {
      const [install, , test] = await runBlock(blockWith(/^helm install /));
      assert.match(
        install!.stdout,
        /kubectl annotate namespace NAMESPACE prestop-injector\.io\/inject=enabled/,
        'NOTES.txt tells how to opt in',
      );
      const pods = await webhookPods(NAMESPACE, RELEASE);
      assert.equal(pods.length, 2, 'two webhook pods');
      for (const pod of pods) {
        const status = pod['status'] as { phase: string; containerStatuses: { ready: boolean }[] };
        const spec = pod['spec'] as { containers: { image: string }[] };
        assert.equal(status.phase, 'Running');
        assert.deepEqual(
          status.containerStatuses.map((c) => c.ready),
          [true],
        );
        assert.equal(
          spec.containers[0]!.image,
          README_IMAGE,
          'the image the README names, found in containerd',
        );
      }
      const mwc = await readObject(node!.controlPlane, {
        apiVersion: 'admissionregistration.k8s.io/v1',
        kind: 'MutatingWebhookConfiguration',
        name: RELEASE,
      });
      const clientConfig = (
        mwc!['webhooks'] as {
          clientConfig: { url?: string; service?: Record<string, unknown>; caBundle?: string };
        }[]
      )[0]!.clientConfig;
      assert.equal(clientConfig.url, undefined, 'no URL: the API server calls the Service');
      assert.deepEqual(clientConfig.service, {
        name: RELEASE,
        namespace: NAMESPACE,
        path: '/mutate',
        port: 443,
      });
      const secret = await readObject(node!.controlPlane, {
        apiVersion: 'v1',
        kind: 'Secret',
        name: `${RELEASE}-tls`,
        namespace: NAMESPACE,
      });
      const data = secret!['data'] as Record<string, string>;
      assert.equal(
        clientConfig.caBundle,
        data['ca.crt'],
        'the webhook wrote its CA into its configuration',
      );
      const leaf = new X509Certificate(Buffer.from(data['tls.crt']!, 'base64'));
      assert.equal(leaf.checkHost(`${RELEASE}.${NAMESPACE}.svc`), `${RELEASE}.${NAMESPACE}.svc`);
      assert.match(test!.stdout, /^TEST SUITE: +prestop-injector-test$/m);
      assert.match(test!.stdout, /^Phase: +Succeeded$/m, 'helm test ran its pod to success');
    });

    it('opts a namespace in; pods get their hooks, answered from inside the webhook pods', async () => {
      await runBlock(blockWith(/^kubectl annotate namespace /));
      let lines: Record<string, unknown>[] = [];
      const admissions = (pod: string) =>
        lines.filter(
          (l) => l['msg'] === 'admission' && l['namespace'] === SHOP && l['pod'] === pod,
        );
      // The webhook flushes its log once a second.
      await waitFor("the admissions in the webhook pods' logs", 10_000, async () => {
        const pods = await webhookPods(NAMESPACE, RELEASE);
        lines = (await Promise.all(pods.map((p) => webhookLog(NAMESPACE, p.metadata.name)))).flat();
        return admissions('web').length > 0 && admissions('api').length > 0;
      });
      assert.equal(admissions('web').length, 1, 'web was admitted by a webhook pod');
      assert.equal(admissions('web')[0]!['outcome'], 'mutated');
      assert.equal(admissions('api').length, 1);
      assert.equal(
        admissions('tool').length,
        0,
        'matchConditions: the opted-out pod is not even sent',
      );
      assert.ok(
        lines.some((l) => l['msg'] === 'certificate writer lease acquired'),
        'one pod wrote the certificates',
      );
    });

    it('upgrades while a pod is created every 100 ms: the webhook pods roll and none is admitted without its hook', async () => {
      const certificates = async () => {
        const secret = await readObject(node!.controlPlane, {
          apiVersion: 'v1',
          kind: 'Secret',
          name: `${RELEASE}-tls`,
          namespace: NAMESPACE,
        });
        const mwc = await readObject(node!.controlPlane, {
          apiVersion: 'admissionregistration.k8s.io/v1',
          kind: 'MutatingWebhookConfiguration',
          name: RELEASE,
        });
        return {
          data: secret!['data'],
          caBundle: (mwc!['webhooks'] as { clientConfig: { caBundle?: string } }[])[0]!.clientConfig
            .caBundle,
        };
      };
      const certificatesBefore = await certificates();
      const before = (await webhookPods(NAMESPACE, RELEASE)).map((p) => p.metadata.name).sort();
      const loop = podLoop();
      try {
        await runBlock(blockWith(/^helm upgrade /));
        // And a moment after the last old pod left.
        await new Promise((resolve) => setTimeout(resolve, 3_000));
      } finally {
        await loop.stop();
      }
      const afterNames = (await webhookPods(NAMESPACE, RELEASE)).map((p) => p.metadata.name).sort();
      assert.equal(afterNames.length, 2);
      assert.ok(
        afterNames.every((n) => !before.includes(n)),
        `both webhook pods replaced: ${before} -> ${afterNames}`,
      );
      assert.deepEqual(
        await certificates(),
        certificatesBefore,
        'the upgrade kept the CA, the serving pair and the caBundle',
      );
      const bad = loop.records.filter((r) => r.status !== 201 || !r.mutated);
      console.log(
        `rollout: ${loop.records.length} pods created in ${(loop.elapsed() / 1000).toFixed(1)} s, ${bad.length} without their hook`,
      );
      assert.ok(loop.records.length > 100, 'the loop ran through the rollout');
      assert.deepEqual(bad, [], 'every pod created during the rollout carries its hook');
    });

    it('uninstalls: the hook removes the webhook configuration first, and everything of the release goes', async () => {
      const gone: Record<string, number> = {};
      let watching = true;
      const begun = Date.now();
      const watcher = (async () => {
        while (watching) {
          for (const [kind, apiVersion, namespace] of [
            ['MutatingWebhookConfiguration', 'admissionregistration.k8s.io/v1', undefined],
            ['Deployment', 'apps/v1', NAMESPACE],
            ['Service', 'v1', NAMESPACE],
          ] as const) {
            if (
              gone[kind] === undefined &&
              (await readObject(node!.controlPlane, {
                apiVersion,
                kind,
                name: RELEASE,
                ...(namespace ? { namespace } : {}),
              })) === null
            )
              gone[kind] = Date.now() - begun;
          }
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      })();
      try {
        await runBlock(blockWith(/^helm uninstall /));
      } finally {
        watching = false;
        await watcher;
      }
      console.log(
        `uninstall: webhook configuration gone at ${gone['MutatingWebhookConfiguration']} ms, Deployment at ${gone['Deployment']} ms, Service at ${gone['Service']} ms`,
      );
      assert.ok(
        gone['MutatingWebhookConfiguration']! < gone['Deployment']! &&
          gone['MutatingWebhookConfiguration']! < gone['Service']!,
        'the webhook configuration went first',
      );
      for (const [apiVersion, kind, namespace] of [
        ['rbac.authorization.k8s.io/v1', 'ClusterRole', undefined],
        ['rbac.authorization.k8s.io/v1', 'ClusterRoleBinding', undefined],
        ['batch/v1', 'Job', NAMESPACE],
        ['v1', 'Secret', NAMESPACE],
        ['coordination.k8s.io/v1', 'Lease', NAMESPACE],
        ['v1', 'ServiceAccount', NAMESPACE],
        ['policy/v1', 'PodDisruptionBudget', NAMESPACE],
      ] as const) {
        const left = await listObjects(node!.controlPlane, {
          apiVersion,
          kind,
          labelSelector: `app.kubernetes.io/instance=${RELEASE}`,
          ...(namespace ? { namespace } : {}),
        });
        assert.deepEqual(
          left.map((o) => o.metadata.name),
          [],
          `no ${kind} of the release is left (hooks included)`,
        );
      }
      const res = await createObject(node!.controlPlane, {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'after-uninstall', namespace: SHOP },
        spec: { containers: [{ name: 'app', image: 'nginx:1.27' }] },
      } as KubeObject);
      assert.equal(res.status, 201);
      assert.deepEqual(
        [podView(res.body).preStop, podView(res.body).status],
        [undefined, undefined],
        'pods are left as they are',
      );
    });

    it('ran every block of the README install section', () => {
      assert.ok(blocks.length >= 4, 'the section has its blocks');
      assert.equal(ran.size, blocks.length, 'no README block was left out');
    });
  });

  describe('failurePolicy Fail, run-time certificates that live 30 s, port 443', () => {
    const NS = 'webhook-fail';
    const REL = 'fail-closed';
    let loop: ReturnType<typeof podLoop> | undefined;

    before(async () => {
      const install = await shell(
        [
          `helm install ${REL} ./charts/prestop-injector --namespace ${NS} --create-namespace`,
          '--set image.repository=registry.example.com/prestop-injector',
          '--set webhook.failurePolicy=Fail',
          '--set certificates.runtime.certValidity=30s,certificates.runtime.renewBefore=20s,certificates.runtime.caValidity=90s',
          '--set config.certPollSeconds=1',
          // A privileged port, as on GKE: the chart's sysctl lets uid 65532 bind it.
          '--set containerPorts.webhook=443',
          `&& kubectl --namespace ${NS} rollout status deployment/${REL}-prestop-injector --timeout=2m`,
        ].join(' '),
      );
      if (install.code !== 0)
        assert.fail(`${install.stdout}${install.stderr}\n${await diagnostics()}`);
      loop = podLoop();
    });

    after(() => loop?.stop());

    const failures = () => loop!.records.filter((r) => r.status !== 201);

    it('renews its serving certificate itself; both pods serve each new one; no pod creation fails', async () => {
      for (const pod of await webhookPods(NS, REL)) {
        const spec = pod['spec'] as {
          containers: { ports: { name: string; containerPort: number }[] }[];
        };
        assert.equal(
          spec.containers[0]!.ports.find((p) => p.name === 'webhook')!.containerPort,
          443,
        );
      }
      const leaves = new Set<string>();
      await waitFor(
        'two renewals of the serving certificate',
        60_000,
        async () => {
          const secret = await readObject(node!.controlPlane, {
            apiVersion: 'v1',
            kind: 'Secret',
            name: `${REL}-prestop-injector-tls`,
            namespace: NS,
          });
          leaves.add((secret!['data'] as Record<string, string>)['tls.crt']!);
          return leaves.size >= 3;
        },
        1_000,
      );
      // Give the last one a poll to be loaded, then read each pod's own account.
      await new Promise((resolve) => setTimeout(resolve, 2_500));
      for (const pod of await webhookPods(NS, REL)) {
        const reloads = (await webhookLog(NS, pod.metadata.name)).filter(
          (l) => l['msg'] === 'serving certificate reloaded',
        );
        assert.ok(
          reloads.length >= 2,
          `${pod.metadata.name} loaded the renewed certificates (${reloads.length})`,
        );
      }
      console.log(
        `renewals: ${leaves.size} serving certificates in ${(loop!.elapsed() / 1000).toFixed(1)} s, ${loop!.records.length} pods created`,
      );
      assert.deepEqual(failures(), [], 'no pod creation failed');
      assert.ok(
        loop!.records.every((r) => r.mutated),
        'every pod got its hook',
      );
    });

    it('lets evictions take one webhook pod at a time (PodDisruptionBudget); no pod creation fails', async () => {
      const evict = (name: string) =>
        api(node!.controlPlane, 'POST', `/api/v1/namespaces/${NS}/pods/${name}/eviction`, {
          apiVersion: 'policy/v1',
          kind: 'Eviction',
          metadata: { name, namespace: NS },
        });
      const [first, second] = (await webhookPods(NS, REL)).map((p) => p.metadata.name);
      assert.equal((await evict(first!)).status, 201, 'the first eviction is allowed');
      assert.equal(
        (await evict(second!)).status,
        429,
        'the second waits for a replacement to be ready',
      );
      let refused = 1;
      await waitFor(
        'the second eviction to be allowed',
        90_000,
        async () => {
          const res = await evict(second!);
          if (res.status === 429) refused++;
          return res.status === 201;
        },
        500,
      );
      const rollout = await shell(
        `kubectl --namespace ${NS} rollout status deployment/${REL}-prestop-injector --timeout=2m`,
      );
      assert.equal(rollout.code, 0, rollout.stderr);
      const now = (await webhookPods(NS, REL)).map((p) => p.metadata.name);
      assert.ok(!now.includes(first!) && !now.includes(second!), 'both replaced');
      console.log(
        `evictions: the second was refused ${refused} times until a replacement was ready`,
      );
      assert.deepEqual(failures(), [], 'no pod creation failed');
      assert.ok(
        loop!.records.every((r) => r.mutated),
        'every pod got its hook',
      );
    });

    it('uninstalls while pods are created: no pod creation fails', async () => {
      const before = loop!.records.length;
      const uninstall = await shell(`helm uninstall ${REL} --namespace ${NS} --wait --timeout 2m`);
      assert.equal(uninstall.code, 0, `${uninstall.stdout}${uninstall.stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      await loop!.stop();
      const during = loop!.records.slice(before);
      console.log(
        `uninstall under load: ${during.length} pods created, ${during.filter((r) => r.mutated).length} still injected, ${failures().length} failed`,
      );
      assert.ok(during.length > 20);
      assert.deepEqual(failures(), [], 'no pod creation failed');
      assert.equal(during.at(-1)!.mutated, false, 'pods created afterwards are left as they are');
      assert.equal(
        await readObject(node!.controlPlane, {
          apiVersion: 'admissionregistration.k8s.io/v1',
          kind: 'MutatingWebhookConfiguration',
          name: `${REL}-prestop-injector`,
        }),
        null,
      );
    });
  });
});
