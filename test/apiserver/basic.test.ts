// End to end against a real kube-apiserver (etcd + kube-apiserver, no
// nodes): the webhook runs as its own process, the API server calls it over
// HTTPS, and pods are read back as stored.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  createNamespace,
  createPod,
  readPod,
  registerWebhook,
  simplePod,
  waitForWebhookActive,
} from '../support/cluster/api.ts';
import { startControlPlane, type ControlPlane } from '../support/cluster/apiserver.ts';
import { logsOnFailure } from '../support/cluster/processes.ts';
import { startServe, type ServeProcess } from '../support/serve.ts';

const NAMESPACE = 'e2e-basic';
const INJECT = 'prestop-injector.io/inject';
const STATUS = 'prestop-injector.io/status';

describe('webhook against a real kube-apiserver', () => {
  let cp: ControlPlane | undefined;
  let webhook: ServeProcess | undefined;

  const withLogs = logsOnFailure(() => ({ webhook, cp }), 40);

  before(async () => {
    cp = await startControlPlane();
    console.log(`kube-apiserver ${cp.version}`);
    const plane = cp;
    await withLogs(async () => {
      webhook = await startServe({
        kubeconfig: plane.kubeconfigPath,
        args: ['--inject-default', 'disabled', '--kube-version', plane.minorVersion],
      });
      await createNamespace(plane, NAMESPACE);
      await registerWebhook(plane, {
        name: 'prestop-injector',
        url: webhook.url,
        caBundlePem: webhook.certs.caPem,
        failurePolicy: 'Ignore',
      });
      await waitForWebhookActive(plane, { namespace: NAMESPACE });
    });
  });

  after(async () => {
    await webhook?.stop();
    await cp?.stop();
  });

  it('injects a native sleep preStop and raises the grace period', () =>
    withLogs(async () => {
      const plane = cp!;
      await createPod(
        plane,
        NAMESPACE,
        simplePod('opted-in', { annotations: { [INJECT]: 'enabled' } }),
      );
      const pod = await readPod(plane, NAMESPACE, 'opted-in');
      const container = pod.spec?.containers[0];
      assert.ok(container, 'pod has its container');
      const preStop = container.lifecycle?.preStop;
      assert.ok(preStop, `preStop injected; got lifecycle ${JSON.stringify(container.lifecycle)}`);
      assert.equal(preStop.sleep?.seconds, 10, 'sleep action with the default delay');
      assert.equal(preStop.exec, undefined, 'no exec hook when the sleep action exists');
      assert.equal(pod.spec?.terminationGracePeriodSeconds, 40, 'grace period 30 + delay 10');
      const status = pod.metadata?.annotations?.[STATUS];
      assert.ok(status, 'status annotation present');
      assert.doesNotThrow(() => JSON.parse(status), 'status annotation is JSON');
    }));

  it('leaves pods alone that did not opt in (inject-default disabled)', () =>
    withLogs(async () => {
      const plane = cp!;
      await createPod(plane, NAMESPACE, simplePod('not-opted-in'));
      const pod = await readPod(plane, NAMESPACE, 'not-opted-in');
      assert.equal(pod.spec?.containers[0]?.lifecycle, undefined);
      assert.equal(pod.spec?.terminationGracePeriodSeconds, 30);
      assert.equal(pod.metadata?.annotations?.[STATUS], undefined);
    }));

  it('fails open: with the webhook down, pods are admitted unchanged', () =>
    withLogs(async () => {
      const plane = cp!;
      await webhook!.stop();
      const created = await createPod(
        plane,
        NAMESPACE,
        simplePod('webhook-down', { annotations: { [INJECT]: 'enabled' } }),
      );
      assert.ok(created.metadata?.uid, 'pod admitted');
      const pod = await readPod(plane, NAMESPACE, 'webhook-down');
      assert.equal(pod.spec?.containers[0]?.lifecycle, undefined, 'no preStop');
      assert.equal(pod.spec?.terminationGracePeriodSeconds, 30, 'grace period untouched');
      assert.equal(pod.metadata?.annotations?.[STATUS], undefined, 'no status annotation');
      assert.equal(pod.metadata?.annotations?.[INJECT], 'enabled');
    }));
});
