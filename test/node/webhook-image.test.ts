// The webhook's image, built from the Dockerfile by buildah (no registry, no
// Docker), imported into the real node's containerd and run by runc as a pod:
// uid 65532, a read-only root filesystem, no capabilities, the image's own
// ENTRYPOINT and CMD, its certificates from a Secret. Its /healthz answers a
// client inside the pod network.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { waitFor } from '../support/cluster/processes.ts';
import { makeDevCerts } from '../support/serve.ts';
import { startNode, type RealNode } from '../support/node/node.ts';
import { buildWebhookImage, type WebhookImage } from '../support/node/webhook-image.ts';
import { sleeperPod } from './manifests.ts';

const NAMESPACE = 'webhook-smoke';
const UID = 65532;

describe('the webhook image on a real node', () => {
  let node: RealNode | undefined;
  let image: WebhookImage;

  before(async () => {
    const begun = Date.now();
    image = await buildWebhookImage();
    console.log(
      image.cached
        ? `webhook image ${image.ref} from the cache`
        : `webhook image ${image.ref} built by buildah in ${image.buildSeconds.toFixed(1)} s`,
    );
    node = await startNode();
    const imported = Date.now();
    await node.importImage(image);
    console.log(
      `node Ready and image imported ${((Date.now() - begun) / 1000).toFixed(1)} s after start ` +
        `(import ${((Date.now() - imported) / 1000).toFixed(1)} s)`,
    );
  });

  after(() => node?.stop());

  it('runs as uid 65532 with a read-only root filesystem and answers /healthz in the pod network', async () => {
    const n = node!;
    try {
      const certs = makeDevCerts({ extraSans: [`webhook.${NAMESPACE}.svc`] });
      await n.kubectl('create', 'namespace', NAMESPACE);
      await n.kubectl(
        'create',
        'secret',
        'tls',
        'webhook-certs',
        '-n',
        NAMESPACE,
        `--cert=${certs.certPath}`,
        `--key=${certs.keyPath}`,
      );
      await n.apply(webhookPod(image.ref), sleeperPod(n, NAMESPACE, 'client'));
      await n.kubectl(
        'wait',
        '-n',
        NAMESPACE,
        '--for=condition=Ready',
        'pod/webhook',
        'pod/client',
        '--timeout=90s',
      );

      const podIP = (
        await n.kubectl('get', 'pod', '-n', NAMESPACE, 'webhook', '-o', 'jsonpath={.status.podIP}')
      ).trim();
      const healthz = await n.kubectl(
        'exec',
        '-n',
        NAMESPACE,
        'client',
        '--',
        'node',
        '/app/http-get.ts',
        `http://${podIP}:8081/healthz`,
      );
      assert.deepEqual(JSON.parse(healthz), { status: 'ok' });

      // The container's process, as runc started it.
      const containerID = (
        await n.kubectl(
          'get',
          'pod',
          '-n',
          NAMESPACE,
          'webhook',
          '-o',
          'jsonpath={.status.containerStatuses[0].containerID}',
        )
      ).replace(/^containerd:\/\//, '');
      const tasks = await n.nodes[0]!.containerd.ctr('-n', 'k8s.io', 'tasks', 'ls');
      const pid = new RegExp(`^${containerID}\\s+(\\d+)`, 'm').exec(tasks)?.[1];
      assert.ok(pid, `task ${containerID} in:\n${tasks}`);
      const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
      assert.match(status, new RegExp(`^Uid:\\s+${UID}\\s+${UID}\\s+${UID}\\s+${UID}$`, 'm'));
      assert.match(status, /^CapEff:\s+0+$/m);
      const rootMount = fs
        .readFileSync(`/proc/${pid}/mountinfo`, 'utf8')
        .split('\n')
        .find((line) => line.split(' ')[4] === '/');
      assert.match(rootMount ?? '', /^\S+ \S+ \S+ \S+ \/ ro[, ]/, `root mount: ${rootMount}`);
      const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
      console.log(`the webhook runs as uid ${UID}, root read-only: ${cmdline.join(' ')}`);

      // Its own log, from inside the pod.
      await waitFor('the webhook to log that it serves', 10_000, async () =>
        /prestop-injector serving/.test(await n.kubectl('logs', '-n', NAMESPACE, 'webhook')),
      );
    } catch (err) {
      console.error(n.logTails(30));
      console.error(
        await n
          .kubectlRun(['describe', 'pod', '-n', NAMESPACE, 'webhook'])
          .then((r) => r.stdout + r.stderr),
      );
      console.error(
        await n.kubectlRun(['logs', '-n', NAMESPACE, 'webhook']).then((r) => r.stdout + r.stderr),
      );
      throw err;
    }
  });
});

/** The webhook as the chart runs it: the image's own command, hardened. */
function webhookPod(imageRef: string) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'webhook', namespace: NAMESPACE, labels: { app: 'webhook' } },
    spec: {
      // No API access in this test: the cluster view stays off.
      automountServiceAccountToken: false,
      securityContext: {
        runAsNonRoot: true,
        runAsUser: UID,
        runAsGroup: UID,
        seccompProfile: { type: 'RuntimeDefault' },
      },
      containers: [
        {
          name: 'webhook',
          image: imageRef,
          imagePullPolicy: 'Never',
          env: [
            { name: 'PRESTOP_TLS_CERT', value: '/certs/tls.crt' },
            { name: 'PRESTOP_TLS_KEY', value: '/certs/tls.key' },
            { name: 'PRESTOP_CLUSTER', value: 'off' },
          ],
          ports: [
            { name: 'https', containerPort: 8443 },
            { name: 'health', containerPort: 8081 },
          ],
          readinessProbe: { httpGet: { path: '/readyz', port: 'health' }, periodSeconds: 1 },
          securityContext: {
            readOnlyRootFilesystem: true,
            allowPrivilegeEscalation: false,
            capabilities: { drop: ['ALL'] },
          },
          volumeMounts: [{ name: 'certs', mountPath: '/certs', readOnly: true }],
        },
      ],
      volumes: [{ name: 'certs', secret: { secretName: 'webhook-certs', defaultMode: 0o444 } }],
    },
  };
}
