import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { parseAllDocuments, stringify } from 'yaml';
import { Annotation } from '../../src/core/annotations.ts';
import { handlerKeys } from '../../src/core/hooks.ts';
import type { PodLike } from '../../src/core/types.ts';
import { arbitraryPod } from '../support/arbitraries.ts';
import { scratchDir } from '../support/scratch.ts';

const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
const EXAMPLES = fileURLToPath(new URL('../../examples/pods.yaml', import.meta.url));

/** The CLI with no cluster to ask: an empty kubeconfig path and no in-cluster config. */
function cli(args: string[], input?: string) {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    KUBECONFIG: '',
    HOME: scratchDir('prestop-cli-home-'),
  };
  delete env['KUBERNETES_SERVICE_HOST'];
  const result = spawnSync(process.execPath, [CLI, ...args], { input, encoding: 'utf8', env });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

function tempFile(name: string, text: string): string {
  const file = join(scratchDir('prestop-cli-'), name);
  writeFileSync(file, text);
  return file;
}

const MIXED = `apiVersion: v1
kind: ConfigMap
metadata:
  name: settings # a comment that must survive
data:
  key: value
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  schedule: "0 1 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
            - name: job
              image: example/job:1
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata:
      labels: {app: db}
    spec:
      containers:
        - name: db # primary
          image: example/db:16
---
apiVersion: v1
kind: Pod
metadata:
  name: off
  annotations:
    prestop-injector.io/inject: disabled
spec:
  containers:
    - name: c
      image: example/c:1
`;

describe('cli inject', () => {
  it('mutates pods and pod templates, passes everything else through unchanged, as a v1 List', () => {
    const { code, stdout, stderr } = cli([
      'inject',
      '-f',
      tempFile('m.yaml', MIXED),
      '-o',
      'json',
      '--kube-version',
      '1.33',
    ]);
    assert.equal(code, 0, stderr);
    const list = JSON.parse(stdout) as {
      kind: string;
      apiVersion: string;
      items: Record<string, unknown>[];
    };
    assert.equal(list.kind, 'List');
    assert.equal(list.apiVersion, 'v1');
    const [configMap, cronJob, statefulSet, disabled] = list.items as [
      PodLike,
      PodLike,
      { spec: { template: PodLike } },
      PodLike,
    ];
    const inputs = parseAllDocuments(MIXED, { version: '1.1' }).map((d) => d.toJS() as unknown);
    assert.deepEqual(configMap, inputs[0]);
    assert.deepEqual(cronJob, inputs[1], 'batch pod templates are left alone');
    assert.deepEqual(disabled, inputs[3]);
    const template = statefulSet.spec.template;
    assert.deepEqual(template.spec.containers[0]!.lifecycle?.preStop, { sleep: { seconds: 10 } });
    assert.equal(template.spec.terminationGracePeriodSeconds, 40);
    assert.ok(template.metadata?.annotations?.[Annotation.status]);
  });

  it('keeps comments and untouched documents in YAML output, and is idempotent', () => {
    const file = tempFile('m.yaml', MIXED);
    const first = cli(['inject', '-f', file, '--kube-version', '1.28']);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /# a comment that must survive/);
    assert.match(first.stdout, /# primary/);
    assert.match(first.stdout, /sleep 10/);
    assert.doesNotMatch(first.stdout, /seconds: 10/, 'no sleep action below 1.30');
    const second = cli(['inject', '-f', '-', '--kube-version', '1.28'], first.stdout);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(second.stdout, first.stdout);
  });

  it('one document in, one object out with -o json; JSON input works', () => {
    const input = JSON.stringify({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'x' },
      spec: { containers: [{ name: 'a', image: 'a' }] },
    });
    const { code, stdout } = cli(
      ['inject', '-f', '-', '-o', 'json', '--kube-version', '1.31'],
      input,
    );
    assert.equal(code, 0);
    const out = JSON.parse(stdout) as PodLike;
    assert.equal(out.kind, 'Pod');
    assert.equal(handlerKeys(out.spec.containers[0]!.lifecycle?.preStop).length, 1);
  });

  it('--set changes the defaults; pod annotations still win', () => {
    const { stdout } = cli([
      'inject',
      '-f',
      EXAMPLES,
      '-o',
      'json',
      '--kube-version',
      '1.33',
      '--set',
      'delay-seconds=20',
      '--set',
      'mode=sleep',
    ]);
    const items = (JSON.parse(stdout) as { items: PodLike[] }).items;
    assert.deepEqual(
      items[0]!.spec.containers[0]!.lifecycle?.preStop,
      { sleep: { seconds: 15 } },
      'pod annotation 15 wins',
    );
    assert.deepEqual(items[1]!.spec.containers[0]!.lifecycle?.preStop, { sleep: { seconds: 20 } });
  });

  it('a Namespace in the same input applies its annotations to its pods', () => {
    const text = `apiVersion: v1
kind: Namespace
metadata:
  name: shop
  annotations:
    prestop-injector.io/delay-seconds: "42"
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: shop}
spec:
  containers: [{name: a, image: a}]
`;
    const { stdout } = cli(['inject', '-f', '-', '-o', 'json', '--kube-version', '1.33'], text);
    const items = (JSON.parse(stdout) as { items: PodLike[] }).items;
    assert.deepEqual(items[1]!.spec.containers[0]!.lifecycle?.preStop, { sleep: { seconds: 42 } });
  });

  it('warnings go to stderr, naming the document, key and value', () => {
    const text =
      'apiVersion: v1\nkind: Pod\nmetadata:\n  name: w\n  annotations:\n    prestop-injector.io/mode: nap\nspec:\n  containers: [{name: a, image: a}]\n';
    const { code, stdout, stderr } = cli(['inject', '-f', '-'], text);
    assert.equal(code, 0);
    assert.match(stderr, /Pod\/w: .*"nap".*prestop-injector\.io\/mode/);
    assert.doesNotMatch(stdout, /warning/);
  });

  it('unparseable input: a clear message and a non-zero exit', () => {
    const bad = cli(['inject', '-f', '-'], 'kind: Pod\n  spec: [unclosed\n');
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /cannot parse input/);
    const missing = cli(['inject', '-f', '/nonexistent/file.yaml']);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /cannot read/);
    const usage = cli(['inject', '-f', EXAMPLES, '--set', 'nonsense=1']);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /unknown key nonsense/);
    const version = cli(['inject', '-f', EXAMPLES, '--kube-version', 'latest']);
    assert.equal(version.code, 2);
  });

  it('--explain shows where the old spec breaks and that the new one does not', () => {
    const { code, stdout } = cli(['inject', '-f', EXAMPLES, '--kube-version', '1.33', '--explain']);
    assert.equal(code, 0);
    const meshed = stdout.slice(
      stdout.indexOf('== Pod/meshed'),
      stdout.indexOf('== Deployment/api'),
    );
    const [before, after] = meshed.split('\nafter ');
    assert.match(before!, /istio-proxy can be gone at 5s while app containers may still serve/);
    assert.match(after!, /ok: no problem found/);
    assert.match(after!, /istio-proxy +=+T\?+~+K/);
  });
});

describe('cli inject on pods never seen before', () => {
  for (const kube of ['1.33', '1.28']) {
    it(`keeps every rule on 300 random pods at ${kube}, and a second run changes nothing`, () => {
      const inputs = fc.sample(arbitraryPod, { numRuns: 300, seed: kube === '1.33' ? 133 : 128 });
      const file = tempFile(
        'random.yaml',
        inputs.map((p) => stringify(p, { version: '1.1' })).join('---\n'),
      );
      const first = cli(['inject', '-f', file, '-o', 'json', '--kube-version', kube]);
      assert.equal(first.code, 0, first.stderr);
      const outputs = (JSON.parse(first.stdout) as { items: PodLike[] }).items;
      assert.equal(outputs.length, inputs.length);
      const minor = Number(kube.split('.')[1]);
      outputs.forEach((output, i) => {
        const input = inputs[i]!;
        const disabled = input.metadata?.annotations?.[Annotation.inject]?.trim().toLowerCase();
        const batch =
          input.spec.restartPolicy === 'OnFailure' || input.spec.restartPolicy === 'Never';
        if (batch || disabled === 'disabled' || disabled === 'false')
          assert.deepEqual(output, input, `pod ${i}: left alone`);
        const grace = output.spec.terminationGracePeriodSeconds;
        assert.ok(
          grace === undefined || grace >= (input.spec.terminationGracePeriodSeconds ?? 0),
          `pod ${i}: grace never lowered`,
        );
        const before = new Map(
          [...(input.spec.initContainers ?? []), ...input.spec.containers].map((c) => [c.name, c]),
        );
        for (const c of [...(output.spec.initContainers ?? []), ...output.spec.containers]) {
          const preStop = c.lifecycle?.preStop;
          if (preStop === undefined) continue;
          assert.equal(handlerKeys(preStop).length, 1, `pod ${i} ${c.name}: one handler`);
          const original = before.get(c.name)?.lifecycle?.preStop;
          if (original !== undefined) {
            assert.deepEqual(preStop, original, `pod ${i} ${c.name}: existing hook untouched`);
            continue;
          }
          if (preStop.sleep !== undefined) {
            assert.ok(minor >= 30, `pod ${i} ${c.name}: no sleep action below 1.30`);
            assert.ok(
              grace !== undefined && preStop.sleep.seconds <= grace,
              `pod ${i} ${c.name}: sleep within grace`,
            );
          }
          const command = preStop.exec?.command?.join(' ') ?? '';
          if (/distroless/.test(c.image ?? ''))
            assert.doesNotMatch(
              command,
              /^\/bin\/sh/,
              `pod ${i} ${c.name}: no shell on distroless`,
            );
          if (input.spec.hostNetwork === true)
            assert.doesNotMatch(
              command,
              /\/proc\/net/,
              `pod ${i} ${c.name}: no /proc in hostNetwork`,
            );
        }
        if (JSON.stringify(output) !== JSON.stringify(input)) {
          assert.ok(
            output.metadata?.annotations?.[Annotation.status],
            `pod ${i}: status on a mutated pod`,
          );
        }
      });
      const second = cli(['inject', '-f', '-', '-o', 'json', '--kube-version', kube], first.stdout);
      assert.equal(second.code, 0, second.stderr);
      assert.deepEqual(JSON.parse(second.stdout), JSON.parse(first.stdout), 'idempotent');
    });
  }
});
