// The chart's ipvs-reaper option, rendered by helm and checked against a
// real kube-apiserver: every object passes a server-side dry run; the
// DaemonSet's arguments are read back by the reaper's own parser; its pods
// use the node's network with NET_ADMIN and nothing else; its RBAC is
// enough for the reaper's own informers (they sync as its ServiceAccount)
// and no more; and its pods are not the webhook's.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import pino from 'pino';
import { AddressBook } from '../../src/reaper/address-book.ts';
import { parseReaperArgs } from '../../src/reaper/command.ts';
import { watchCluster } from '../../src/reaper/watch.ts';
import { createNamespace } from '../support/cluster/api.ts';
import { startControlPlane, type ControlPlane } from '../support/cluster/apiserver.ts';
import { ensureTools, type Tools } from '../support/cluster/binaries.ts';
import { waitFor } from '../support/cluster/processes.ts';
import {
  api,
  createObject,
  findObject,
  helmTemplate,
  HelmError,
  serviceAccountToken,
  writeTokenKubeconfig,
  type KubeObject,
} from '../support/chart.ts';

const NAMESPACE = 'ipvs-reaper-chart';
const SERVER_VERSION = '1.37.2';
const ENABLED = {
  'ipvsReaper.enabled': true,
  'ipvsReaper.image.repository': 'registry.example.com/prestop-injector-ipvs-reaper',
  'ipvsReaper.podCIDRs': ['10.244.0.0/16', 'fd00:10:244::/56'],
  'ipvsReaper.intervalSeconds': 5,
};

interface Container {
  args: string[];
  image: string;
  ports: { containerPort: number }[];
  securityContext: {
    runAsUser: number;
    allowPrivilegeEscalation: boolean;
    readOnlyRootFilesystem: boolean;
    capabilities: { drop: string[]; add: string[] };
  };
}

interface PodTemplate {
  metadata: { labels: Record<string, string> };
  spec: { hostNetwork: boolean; serviceAccountName: string; containers: Container[] };
}

const templateOf = (docs: KubeObject[]) =>
  (findObject(docs, 'DaemonSet')['spec'] as { template: PodTemplate }).template;

describe('the chart’s ipvs-reaper DaemonSet, against a real API server', () => {
  let tools: Tools;
  let cp: ControlPlane;
  let enabled: KubeObject[];

  before(async () => {
    tools = await ensureTools();
    cp = await startControlPlane();
    await createNamespace(cp, NAMESPACE, undefined, {
      'pod-security.kubernetes.io/enforce': 'privileged',
    });
    enabled = await helmTemplate(tools, {
      namespace: NAMESPACE,
      kubeVersion: SERVER_VERSION,
      values: ENABLED,
      withTests: false,
    });
  });
  after(async () => {
    await cp?.stop();
  });

  it('is off by default', async () => {
    const docs = await helmTemplate(tools, { namespace: NAMESPACE, kubeVersion: SERVER_VERSION });
    assert.equal(
      docs.some((d) => d.kind === 'DaemonSet' || d.metadata.name.endsWith('-ipvs-reaper')),
      false,
    );
  });

  it('needs its own image (one with ipvsadm)', async () => {
    try {
      await helmTemplate(tools, {
        namespace: NAMESPACE,
        kubeVersion: SERVER_VERSION,
        values: { 'ipvsReaper.enabled': true },
      });
      assert.fail('rendered without ipvsReaper.image.repository');
    } catch (error) {
      assert.ok(error instanceof HelmError, String(error));
      assert.match(error.result.stderr, /ipvsReaper\.image\.repository is required/);
    }
  });

  it('renders a ServiceAccount, ClusterRole, ClusterRoleBinding and DaemonSet the API server accepts', async () => {
    const mine = enabled.filter((d) => d.metadata.name.endsWith('-ipvs-reaper'));
    assert.deepEqual(mine.map((d) => d.kind).sort(), [
      'ClusterRole',
      'ClusterRoleBinding',
      'DaemonSet',
      'ServiceAccount',
    ]);
    for (const doc of mine) {
      const res = await createObject(cp, doc, { dryRun: true, namespace: NAMESPACE });
      assert.equal(
        res.status,
        201,
        `${doc.kind}/${doc.metadata.name}: ${JSON.stringify(res.body)}`,
      );
    }
  });

  it('passes the values as arguments the reaper’s own parser reads back', () => {
    const [container] = templateOf(enabled).spec.containers;
    assert.deepEqual(container!.args.slice(0, 2), ['dist/cli/main.js', 'ipvs-reaper']);
    const parsed = parseReaperArgs(container!.args.slice(2));
    assert.notEqual(parsed, 'help');
    if (parsed === 'help') return;
    assert.equal(parsed.dryRun, false);
    assert.equal(parsed.diagnose, false);
    assert.equal(parsed.intervalMs, 5000);
    assert.deepEqual(
      parsed.podCidrs.map((c) => c.text),
      ['10.244.0.0/16', 'fd00:10:244::/56'],
    );
    assert.equal(parsed.healthPort, container!.ports[0]!.containerPort);
    assert.equal(container!.image, 'registry.example.com/prestop-injector-ipvs-reaper:0.1.0');
  });

  it('--dry-run reaches the reaper when asked', async () => {
    const docs = await helmTemplate(tools, {
      namespace: NAMESPACE,
      kubeVersion: SERVER_VERSION,
      values: { ...ENABLED, 'ipvsReaper.dryRun': true },
      withTests: false,
    });
    const parsed = parseReaperArgs(templateOf(docs).spec.containers[0]!.args.slice(2));
    assert.ok(parsed !== 'help' && parsed.dryRun);
  });

  it('uses the node’s network with NET_ADMIN as its only capability', () => {
    const { spec } = templateOf(enabled);
    assert.equal(spec.hostNetwork, true);
    const { securityContext } = spec.containers[0]!;
    assert.deepEqual(securityContext.capabilities, { drop: ['ALL'], add: ['NET_ADMIN'] });
    assert.equal(securityContext.allowPrivilegeEscalation, false);
    assert.equal(securityContext.readOnlyRootFilesystem, true);
  });

  it('is refused by Pod Security "baseline" (host network, NET_ADMIN): it needs a privileged namespace', async () => {
    const baseline = 'ipvs-reaper-baseline';
    await createNamespace(cp, baseline, undefined, {
      'pod-security.kubernetes.io/enforce': 'baseline',
    });
    const template = templateOf(enabled);
    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'reaper', labels: template.metadata.labels },
      spec: template.spec,
    } as unknown as KubeObject;
    const refused = await createObject(cp, pod, { namespace: baseline, dryRun: true });
    assert.equal(refused.status, 403);
    assert.match(String(refused.body.message), /hostNetwork=true/);
    assert.match(String(refused.body.message), /NET_ADMIN/);
    const admitted = await createObject(cp, pod, { namespace: NAMESPACE, dryRun: true });
    assert.equal(admitted.status, 201, JSON.stringify(admitted.body));
  });

  it('its pods are not selected by the webhook’s Service', async () => {
    const docs = await helmTemplate(tools, {
      namespace: NAMESPACE,
      kubeVersion: SERVER_VERSION,
      values: ENABLED,
    });
    const selector = (findObject(docs, 'Service')['spec'] as { selector: Record<string, string> })
      .selector;
    const labels = templateOf(docs).metadata.labels;
    assert.equal(
      Object.entries(selector).every(([key, value]) => labels[key] === value),
      false,
    );
  });

  it('grants what the reaper’s informers need: they sync as its ServiceAccount, and see a pod', async () => {
    for (const kind of ['ServiceAccount', 'ClusterRole', 'ClusterRoleBinding']) {
      const res = await createObject(cp, findObject(enabled, kind), { namespace: NAMESPACE });
      assert.equal(res.status, 201, `${kind}: ${JSON.stringify(res.body)}`);
    }
    const account = findObject(enabled, 'ServiceAccount').metadata.name;
    const kubeconfigPath = path.join(cp.dir, 'kubeconfig-ipvs-reaper');
    await writeTokenKubeconfig(
      kubeconfigPath,
      cp,
      await serviceAccountToken(cp, NAMESPACE, account),
    );
    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfigPath);

    const created = await api(cp, 'POST', `/api/v1/namespaces/${NAMESPACE}/pods`, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'web' },
      spec: { nodeName: 'node-1', containers: [{ name: 'web', image: 'example/web:1' }] },
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const patched = await api(
      cp,
      'PATCH',
      `/api/v1/namespaces/${NAMESPACE}/pods/web/status`,
      { status: { podIP: '10.244.3.7', podIPs: [{ ip: '10.244.3.7' }] } },
      'application/merge-patch+json',
    );
    assert.equal(patched.status, 200, JSON.stringify(patched.body));

    const book = new AddressBook();
    const watch = watchCluster({
      kc,
      book,
      logger: pino({ level: 'silent' }),
      onRemoval: () => {},
    });
    try {
      await waitFor('the reaper’s informers to sync', 30_000, async () => watch.synced());
      assert.deepEqual(book.state('10.244.3.7'), { kind: 'live', holder: `pod ${NAMESPACE}/web` });
      const deleted = await api(cp, 'DELETE', `/api/v1/namespaces/${NAMESPACE}/pods/web`, {
        apiVersion: 'v1',
        kind: 'DeleteOptions',
        gracePeriodSeconds: 0,
      });
      assert.equal(deleted.status, 200);
      await waitFor(
        'the pod to be gone from the cache',
        30_000,
        async () => book.state('10.244.3.7').kind === 'gone',
      );
      assert.equal(watch.stats().pods.restarts, 0, 'no watch was refused and restarted');
    } finally {
      await watch.stop();
    }
  });

  it('grants nothing more: no secrets, no writes', async () => {
    const account = findObject(enabled, 'ServiceAccount').metadata.name;
    const user = `system:serviceaccount:${NAMESPACE}:${account}`;
    const can = async (resource: string, verb: string, group = '') => {
      const res = await api<{ status: { allowed: boolean } }>(
        cp,
        'POST',
        '/apis/authorization.k8s.io/v1/subjectaccessreviews',
        {
          apiVersion: 'authorization.k8s.io/v1',
          kind: 'SubjectAccessReview',
          spec: {
            user,
            groups: ['system:serviceaccounts'],
            resourceAttributes: { group, resource, verb },
          },
        },
      );
      return res.body.status.allowed;
    };
    assert.equal(await can('pods', 'watch'), true);
    assert.equal(await can('endpointslices', 'list', 'discovery.k8s.io'), true);
    assert.equal(await can('secrets', 'list'), false);
    assert.equal(await can('pods', 'delete'), false);
    assert.equal(await can('endpointslices', 'update', 'discovery.k8s.io'), false);
  });
});
