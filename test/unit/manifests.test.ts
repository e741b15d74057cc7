// `inject` on manifests as people have them: read as Kubernetes reads them
// (YAML 1.1 scalars), written back with every byte the change does not touch
// kept, nulls taken as absent, Lists, empty documents, several files, and a
// document that cannot be processed. In process; test/process/ runs the CLI.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Document, isPair, isScalar, isSeq, parseAllDocuments, visit } from 'yaml';
import { goNumber, injectSources, type InputSource } from '../../src/cli/inject.ts';
import { capabilitiesFor, parseKubeVersion, uniformVersions } from '../../src/core/capabilities.ts';
import type { MutationContext } from '../../src/core/mutate.ts';
import { BUILTIN_DEFAULTS, mergeSettings } from '../../src/core/policy.ts';
import type { PodLike } from '../../src/core/types.ts';
import { arbitraryPod } from '../support/arbitraries.ts';

function contextFor(kube: string | null): MutationContext {
  return {
    defaults: mergeSettings({ ...BUILTIN_DEFAULTS, inject: true }, {}),
    capabilities: capabilitiesFor(uniformVersions(parseKubeVersion(kube))),
    config: { distrolessPatterns: [], helperSidecars: [] },
  };
}

function inject(text: string | InputSource[], kube: string | null = '1.33') {
  const sources = typeof text === 'string' ? [{ name: 'in.yaml', text }] : text;
  return injectSources(sources, contextFor(kube));
}

function json(text: string | InputSource[], kube: string | null = '1.33'): unknown {
  return JSON.parse(inject(text, kube).json()) as unknown;
}

/** Lines of `before` that `after` lost, and lines it gained (a longest-common-subsequence diff). */
function lineDiff(before: string, after: string): { removed: string[]; added: string[] } {
  const a = before.split('\n');
  const b = after.split('\n');
  const lcs = Array.from({ length: a.length + 1 }, () => new Array<number>(b.length + 1).fill(0));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lcs[i]![j] =
        a[i] === b[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
    }
  }
  const removed: string[] = [];
  const added: string[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) [i, j] = [i + 1, j + 1];
    else if (lcs[i + 1]![j]! >= lcs[i]![j + 1]!) removed.push(a[i++]!);
    else added.push(b[j++]!);
  }
  return { removed: [...removed, ...a.slice(i)], added: [...added, ...b.slice(j)] };
}

/** Every value scalar's source text, by its path of keys and indices. */
function scalarTexts(text: string): Map<string, string> {
  const texts = new Map<string, string>();
  for (const doc of parseAllDocuments(text, { version: '1.1' })) {
    visit(doc, {
      Scalar(_key, node, ancestors) {
        const chain = [...ancestors, node];
        const path: (string | number)[] = [];
        for (let k = 0; k < chain.length - 1; k++) {
          const here = chain[k];
          const next = chain[k + 1];
          if (isPair(here)) {
            if (here.key === next) return;
            path.push(String((here.key as { value?: unknown }).value));
          } else if (isSeq(here)) {
            path.push(here.items.indexOf(next));
          }
        }
        texts.set(JSON.stringify(path), text.slice(node.range![0], node.range![1]));
      },
    });
  }
  return texts;
}

describe('scalars are read as Kubernetes reads them (go-yaml v2, YAML 1.1)', () => {
  const READS: [string, unknown][] = [
    ['0400', 256],
    ['-0400', -256],
    ['0x1F', 31],
    ['0X1f', 31],
    ['-0x1F', -31],
    ['0o17', 15],
    ['0b101', 5],
    ['1_000', 1000],
    ['08', 8],
    ['1e3', 1000],
    ['1.5E3', 1500],
    ['.5', 0.5],
    ['+.5', 0.5],
    ['1.', 1],
    ['12345678901234567890', 12345678901234567890n],
    ['-9223372036854775808', -9223372036854775808n],
    ['123456789012345678901234567890', 123456789012345678901234567890n],
    ['9007199254740993', 9007199254740993n],
    ['1e400', undefined],
    ['0x', undefined],
    ['_1', undefined],
    ['12:30', undefined],
    ['2001-12-14', undefined],
    ['1e3m', undefined],
    ['0.0.1', undefined],
  ];
  for (const [text, value] of READS) {
    it(`${text} reads as ${value === undefined ? 'a string' : String(value)}`, () => {
      assert.equal(goNumber(text), value);
    });
  }

  it('in a document: numbers, YAML 1.1 booleans and nulls, and strings that only look like them', () => {
    const text = `apiVersion: example.com/v1
kind: Example
metadata:
  name: scalars
spec:
  mode: 0400
  hex: 0x1F
  float: 1e3
  big: 12345678901234567890
  bools: [yes, No, on, OFF, y, N, true, False]
  nulls: [~, null, Null, NULL]
  empty:
  strings: ["0400", '0x1F', !!str 1e3, 12:30, 2001-12-14, yess, "yes", 1e3m]
`;
    const out = inject(text).json();
    const object = JSON.parse(out) as { spec: Record<string, unknown> };
    assert.deepEqual(object.spec, {
      mode: 256,
      hex: 31,
      float: 1000,
      big: 12345678901234567000, // JSON.parse rounds; the text below must not
      bools: [true, false, true, false, true, false, true, false],
      nulls: [null, null, null, null],
      empty: null,
      strings: ['0400', '0x1F', '1e3', '12:30', '2001-12-14', 'yess', 'yes', '1e3m'],
    });
    assert.match(out, /"big": 12345678901234567890,/, 'every digit of a big integer, unquoted');
  });

  it('.inf and .nan have no JSON: -o json names the document instead of writing null', () => {
    const result = inject(
      'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\nkind: Example\nmetadata: {name: inf}\nvalue: -.Inf\n',
    );
    assert.throws(() => result.json(), {
      name: 'Error',
      message: /^in\.yaml: Example\/inf: -Infinity cannot be written as JSON/,
    });
    assert.match(result.yaml(), /value: -\.Inf\n$/);
  });

  it('what a pod annotation holds is what Kubernetes would see: `off` is a boolean, not a mode', () => {
    const pod = `apiVersion: v1
kind: Pod
metadata:
  name: p
  annotations:
    prestop-injector.io/mode: off
spec:
  containers: [{name: a, image: a}]
`;
    const result = inject(pod);
    result.yaml();
    assert.ok(
      result.warnings.some(
        (w) =>
          /^in\.yaml: Pod\/p: /.test(w) && /false/.test(w) && /prestop-injector\.io\/mode/.test(w),
      ),
      result.warnings.join('\n'),
    );
  });
});

const UNTOUCHED = `%YAML 1.1
# kubectl style: sequences at the key's column
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings   # trailing comment
  labels: {app: web, "tier": 'front'}
data:
  mode: "0400"
  script: |
    #!/bin/sh
    exec "$@"
  folded: >-
    one
    two
list:
- a
-   b
- [c, d]
...
# between documents
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
stringData: {token: "x"}
type: Opaque`;

const MUTATED = `# The web tier, as a chart renders it
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:
    note: &note "shared"
    description: >
      folded over
      two lines
spec:
  replicas: 0x3
  revisionHistoryLimit: 1e3
  progressDeadlineSeconds: 12345678901234567890
  template:
    metadata:
      labels:
        app: web # keep
      annotations:
        copied: *note
    spec:
      terminationGracePeriodSeconds: 30
      volumes:
      - name: tls
        secret:
          secretName: 'tls'
          defaultMode: 0400
          items: [{key: a, path: a, mode: 0x1F}]
      containers:
      - name: web    # the app
        image: "example/web:1"
        args: ['--port', "8080", --verbose]
        env:
        - {name: ON, value: "yes"}
        - name: SCRIPT
          value: |
            echo start
              indented
        resources: &res
          limits: {cpu: 1e3m, memory: 12345678901234567890}
      - name: helper
        image: example/helper:1
        resources: *res
        command:
          - /bin/helper
          - --flag=on
`;

describe('YAML output keeps every byte the change does not touch', () => {
  it('documents with nothing to change come out byte for byte: directives, separators, comments, styles', () => {
    const result = inject(UNTOUCHED);
    assert.equal(result.yaml(), UNTOUCHED);
    assert.deepEqual(result.warnings, []);
  });

  it('in a changed document only the changed lines are new: YAML 1.1 scalars, quotes, block scalars, flow, anchors, comments', () => {
    const out = inject(MUTATED).yaml();
    const { removed, added } = lineDiff(MUTATED, out);
    assert.deepEqual(removed, ['      terminationGracePeriodSeconds: 30']);
    assert.ok(added.includes('      terminationGracePeriodSeconds: 40'), added.join('\n'));
    // New lines are all inside what the mutation adds.
    for (const line of added) {
      assert.match(
        line,
        /^\s+(?:terminationGracePeriodSeconds: 40|prestop-injector\.io\/status: '.*'|lifecycle:|preStop:|sleep:|seconds: \d+)$/,
      );
    }
    // Same objects as the JSON output: the text reads as the mutation.
    const reread = parseAllDocuments(out, { version: '1.1', intAsBigInt: true })[0]!.toJS();
    assert.equal(reread.spec.template.spec.volumes[0].secret.defaultMode, 256n);
    assert.deepEqual(json(out), json(MUTATED));
    // And the untouched scalars keep their text.
    const before = scalarTexts(MUTATED);
    const after = scalarTexts(out);
    for (const text of [
      '0x3',
      '1e3',
      '12345678901234567890',
      "'tls'",
      '0400',
      '0x1F',
      '>\n      folded over\n      two lines\n',
      '"example/web:1"',
      "'--port'",
      '"8080"',
      '"yes"',
      'ON',
      '1e3m',
      '--flag=on',
    ]) {
      const paths = [...before].filter(([, t]) => t === text).map(([p]) => p);
      assert.ok(paths.length > 0, `fixture has ${text}`);
      for (const path of paths) assert.equal(after.get(path), text, `${path} keeps ${text}`);
    }
    assert.ok(out.includes('          value: |\n            echo start\n              indented\n'));
    for (const kept of [
      '        resources: &res\n',
      '        copied: *note\n',
      '        resources: *res\n',
    ]) {
      assert.ok(out.includes(kept), kept);
    }
  });

  it('empty flow collections, a block scalar keeping its trailing lines, a plain scalar over two lines', () => {
    const text = `apiVersion: v1
kind: Pod
metadata:
  name: edge
  annotations: {}
spec:
  containers:
  - name: app
    image: app
    lifecycle: {}
    args: this is
      continued
    # about the app
  - name: second
    image: second
    env: []
    command: |+
      keep

  volumes: []
`;
    const result = inject(text);
    const out = result.yaml();
    assert.deepEqual(result.warnings, []);
    assert.deepEqual(json(out), JSON.parse(result.json()));
    assert.deepEqual(lineDiff(text, out).removed, ['  annotations: {}', '    lifecycle: {}']);
    assert.match(
      out,
      /\n {4}lifecycle: \{preStop: \{sleep: \{seconds: 10\}\}\}\n {4}args: this is\n {6}continued\n {4}# about the app\n/,
    );
    assert.match(out, /\n {4}command: \|\+\n {6}keep\n\n {4}lifecycle:\n/);
  });

  it('a value replaced by a block keeps the comment after it; a hook replaced on a later pass, in place', () => {
    const text = `apiVersion: v1
kind: Pod
metadata:
  name: c
spec:
  containers:
  - name: app
    image: app
    lifecycle: null # nothing yet
    securityContext:
      runAsUser: 10
`;
    const first = inject(text);
    const out = first.yaml();
    assert.deepEqual(first.warnings, []);
    assert.match(
      out,
      /\n {4}lifecycle: # nothing yet\n {6}preStop:\n {8}sleep:\n {10}seconds: 10\n {4}securityContext:\n/,
    );
    // Another setting on a second pass: the sleep action becomes a drain script.
    const commented = out.replace(
      '          seconds: 10\n',
      '          seconds: 10\n        # set by the injector\n',
    );
    const drainContext = {
      ...contextFor('1.33'),
      defaults: mergeSettings({ ...BUILTIN_DEFAULTS, inject: true }, { mode: 'drain' }),
    };
    const drain = injectSources([{ name: 'in.yaml', text: commented }], drainContext);
    const second = drain.yaml();
    assert.deepEqual(drain.warnings, []);
    const reread = injectSources([{ name: 'in.yaml', text: second }], drainContext);
    assert.equal(reread.yaml(), second, 'reads as the mutation: nothing left to change');
    assert.match(second, /\n {6}preStop:\n {8}exec:\n {10}command:\n/);
    assert.match(second, /\n {8}# set by the injector\n {4}securityContext:\n {6}runAsUser: 10\n/);
  });

  it('a second pass adds nothing, not even a blank line', () => {
    const first = inject(`${UNTOUCHED}\n---\n${MUTATED}`).yaml();
    assert.equal(inject(first).yaml(), first);
  });

  it('JSON documents stay JSON, laid out as they were', () => {
    const pretty = `${JSON.stringify(
      {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'p', annotations: null },
        spec: { containers: [{ name: 'a', image: 'a', ports: [{ containerPort: 80 }] }] },
      },
      null,
      2,
    )}\n`;
    const compact = `${JSON.stringify({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'q' },
      spec: { containers: [{ name: 'a', image: 'a' }], terminationGracePeriodSeconds: 30 },
    })}\n`;
    for (const input of [pretty, compact]) {
      const out = inject(input).yaml();
      const parsed = JSON.parse(out) as PodLike;
      assert.deepEqual(parsed, json(input));
      assert.ok(parsed.spec.containers[0]!.lifecycle?.preStop);
      assert.equal(
        out.split('\n').length > 3,
        input === pretty,
        'pretty stays pretty, compact compact',
      );
    }
    assert.ok(
      inject(pretty)
        .yaml()
        .includes('        "ports": [\n          {\n            "containerPort": 80\n'),
    );
  });

  it('Windows line endings stay Windows line endings', () => {
    const text =
      'apiVersion: v1\r\nkind: Pod\r\nmetadata:\r\n  name: w\r\nspec:\r\n  containers:\r\n  - name: a\r\n    image: a\r\n';
    const out = inject(text).yaml();
    assert.doesNotMatch(out.replace(/\r\n/g, ''), /\n/);
    assert.deepEqual(json(out), json(text));
  });

  it('random pods in random layouts: untouched scalars keep their text, the text reads as the mutation, a second pass is a no-op', () => {
    const layout = fc.record({
      indentSeq: fc.boolean(),
      indent: fc.constantFrom(2, 4),
      quotes: fc.constantFrom('PLAIN', 'QUOTE_DOUBLE', 'QUOTE_SINGLE') as fc.Arbitrary<
        'PLAIN' | 'QUOTE_DOUBLE' | 'QUOTE_SINGLE'
      >,
      flowPorts: fc.boolean(),
      json: fc.constantFrom('no', 'no', 'pretty', 'compact'),
      kube: fc.constantFrom('1.28', '1.33'),
      wrap: fc.constantFrom('Pod', 'Deployment', 'List'),
    });
    fc.assert(
      fc.property(arbitraryPod, layout, (pod, style) => {
        const object =
          style.wrap === 'Pod'
            ? pod
            : style.wrap === 'Deployment'
              ? {
                  apiVersion: 'apps/v1',
                  kind: 'Deployment',
                  metadata: { name: 'd' },
                  spec: { template: { metadata: pod.metadata, spec: pod.spec } },
                }
              : {
                  apiVersion: 'v1',
                  kind: 'List',
                  items: [{ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'c' } }, pod],
                };
        let text: string;
        if (style.json === 'pretty') text = `${JSON.stringify(object, null, 2)}\n`;
        else if (style.json === 'compact') text = `${JSON.stringify(object)}\n`;
        else {
          // YAML 1.1 text, so that strings like "Y" are quoted as Kubernetes needs.
          const doc = new Document(object, { version: '1.1' });
          if (style.flowPorts) {
            visit(doc, {
              Pair(_k, pair) {
                if (
                  isScalar(pair.key) &&
                  (pair.key.value === 'ports' || pair.key.value === 'labels')
                ) {
                  (pair.value as { flow?: boolean }).flow = true;
                }
              },
            });
          }
          text = doc.toString({
            indentSeq: style.indentSeq,
            indent: style.indent,
            defaultStringType: style.quotes,
            defaultKeyType: 'PLAIN',
            lineWidth: 0,
          });
        }
        const result = inject(text, style.kube);
        const out = result.yaml();
        assert.deepEqual(
          result.warnings.filter((w) => /could not|cannot be/.test(w)),
          [],
        );
        assert.deepEqual(json(out, style.kube), JSON.parse(result.json()));
        assert.equal(inject(out, style.kube).yaml(), out, 'second pass');
        const expected = JSON.parse(result.json()) as unknown;
        const after = scalarTexts(out);
        for (const [path, source] of scalarTexts(text)) {
          const keys = JSON.parse(path) as (string | number)[];
          let was: unknown = object;
          let now: unknown = expected;
          for (const key of keys) {
            was = (was as Record<string | number, unknown> | undefined)?.[key];
            now = (now as Record<string | number, unknown> | undefined)?.[key];
          }
          if (JSON.stringify(was) === JSON.stringify(now) && after.has(path)) {
            assert.equal(after.get(path), source, `${path} untouched`);
          }
        }
      }),
      { numRuns: 150, seed: 19 },
    );
  });
});

describe('anchors and aliases on the way of the change', () => {
  it("are made the changed place's own; the document is written again, with a warning, and reads as the mutation", () => {
    const text = `apiVersion: apps/v1
kind: Deployment
metadata: {name: aliased}
x-template: &tmpl
  spec:
    containers: [{name: a, image: a}]
spec:
  template: *tmpl # the template, by reference
---
apiVersion: v1
kind: Pod
metadata: {name: shared}
spec:
  containers: &c
  - name: a
    image: a
  ephemeralContainers: *c
`;
    const result = inject(text);
    const out = result.yaml();
    assert.deepEqual(result.warnings, [
      'in.yaml: Deployment/aliased: could not be edited in place; written again in full (layout and comments may differ)',
      'in.yaml: Pod/shared: could not be edited in place; written again in full (layout and comments may differ)',
    ]);
    assert.deepEqual(json(out), JSON.parse(result.json()));
    const [deployment, pod] = (
      JSON.parse(result.json()) as {
        items: [
          Record<
            string,
            { template?: PodLike; containers: unknown[]; ephemeralContainers: unknown[] }
          >,
          { spec: { containers: unknown[]; ephemeralContainers: unknown[] } },
        ];
      }
    ).items;
    assert.deepEqual(
      deployment['x-template'],
      (json(text) as { items: Record<string, unknown>[] }).items[0]!['x-template'],
      'the anchored original is not changed',
    );
    assert.ok(deployment['spec']!.template!.spec.containers[0]!.lifecycle?.preStop);
    assert.deepEqual(
      pod.spec.ephemeralContainers,
      [{ name: 'a', image: 'a' }],
      'the alias keeps what it named',
    );
    assert.match(out, /# the template, by reference/);
  });
});

describe('null is absent', () => {
  const NULLS = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: nulls
  annotations: null
spec:
  template:
    metadata:
      annotations:
      labels: ~
    spec:
      terminationGracePeriodSeconds: null
      initContainers: null
      containers:
      - name: app
        image: app
        env: null
        lifecycle: null
        ports: null
      - name: second
        image: second
        lifecycle:
          preStop: null
          postStart: ~
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: no-template}
spec:
  template: null
---
apiVersion: v1
kind: Pod
metadata: null
spec:
  containers: [{name: a, image: a}]
---
apiVersion: v1
kind: Pod
metadata:
  name: after
spec:
  containers:
  - name: a
    image: a
`;

  it('annotations, lifecycle, env, initContainers and grace set to null: every document is written, and mutated', () => {
    const result = inject(NULLS);
    const out = result.yaml();
    assert.deepEqual(
      result.warnings.filter((w) => /cannot|could not/.test(w)),
      [],
    );
    const [deployment, noTemplate, anonymous, after] = (
      json(out) as { items: Record<string, never>[] }
    ).items as [{ spec: { template: PodLike } }, unknown, PodLike, PodLike];
    const template = deployment.spec.template;
    assert.equal(typeof template.spec.terminationGracePeriodSeconds, 'number');
    assert.ok(template.metadata?.annotations?.['prestop-injector.io/status']);
    assert.deepEqual(template.spec.containers[0]!.lifecycle?.preStop, { sleep: { seconds: 10 } });
    assert.deepEqual(template.spec.containers[1]!.lifecycle?.preStop, { sleep: { seconds: 10 } });
    assert.equal(template.spec.containers[1]!.lifecycle?.['postStart'], null, 'other nulls stay');
    assert.equal(template.spec.initContainers, null);
    assert.deepEqual(noTemplate, json(NULLS.split('---\n')[1]!));
    assert.ok(anonymous.spec.containers[0]!.lifecycle?.preStop);
    assert.ok(after.spec.containers[0]!.lifecycle?.preStop);
    // The nulls that were replaced, replaced in place.
    assert.match(out, /\n {6}terminationGracePeriodSeconds: 40\n {6}initContainers: null\n/);
    assert.match(
      out,
      /\n {8}lifecycle:\n {10}preStop:\n {12}sleep:\n {14}seconds: 10\n {8}ports: null\n/,
    );
    assert.equal(inject(out).yaml(), out);
  });

  it('a document that cannot be processed is passed through unchanged, named on stderr, and the others are written', () => {
    const text = `apiVersion: v1
kind: Pod
metadata: {name: first}
spec:
  containers: [{name: a, image: a}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken}
spec:
  template:
    spec:
      containers: [{name: a, image: a}]
---
apiVersion: v1
kind: Pod
metadata: {name: last}
spec:
  containers: [{name: a, image: a}]
`;
    // The second pod's mutation fails, as an unforeseen shape would make it.
    let calls = 0;
    const base = contextFor('1.33');
    const context = {
      ...base,
      get config() {
        if (++calls === 2) throw new TypeError('unexpected shape');
        return base.config;
      },
    };
    const result = injectSources([{ name: 'apps.yaml', text }], context);
    const out = result.yaml();
    assert.deepEqual(result.warnings, [
      'apps.yaml: Deployment/broken: cannot be processed (unexpected shape); passed through unchanged',
    ]);
    const [first, broken, last] = out.split(/^---\n/m);
    assert.equal(broken, text.split(/^---\n/m)[1]);
    assert.match(first!, /preStop/);
    assert.match(last!, /preStop/);
  });
});

const KUBECTL_LIST = `apiVersion: v1
items:
- apiVersion: apps/v1
  kind: Deployment
  metadata:
    annotations:
      deployment.kubernetes.io/revision: "1"
    name: api
    namespace: shop
  spec:
    selector:
      matchLabels:
        app: api
    template:
      metadata:
        creationTimestamp: null
        labels:
          app: api
      spec:
        containers:
        - image: example/api:2
          name: api
          resources: {}
        terminationGracePeriodSeconds: 30
- apiVersion: v1
  kind: Service
  metadata:
    name: api
  spec:
    ports:
    - port: 80
- apiVersion: v1
  kind: PodList
  items:
  - apiVersion: v1
    kind: Pod
    metadata: {name: nested}
    spec:
      containers:
      - name: c
        image: c
kind: List
metadata:
  resourceVersion: ""
`;

describe('Lists', () => {
  it('kubectl get -o yaml output: the items are mutated, Lists within Lists too, the rest kept', () => {
    const result = inject(KUBECTL_LIST);
    const out = result.yaml();
    const list = json(out) as {
      kind: string;
      items: [{ spec: { template: PodLike } }, unknown, { items: [PodLike] }];
    };
    assert.equal(list.kind, 'List');
    assert.deepEqual(list.items[0].spec.template.spec.containers[0]!.lifecycle?.preStop, {
      sleep: { seconds: 10 },
    });
    assert.equal(list.items[0].spec.template.spec.terminationGracePeriodSeconds, 40);
    assert.ok(list.items[2].items[0].spec.containers[0]!.lifecycle?.preStop);
    assert.deepEqual(list.items[1], (json(KUBECTL_LIST) as { items: unknown[] }).items[1]);
    const { removed, added } = lineDiff(KUBECTL_LIST, out);
    assert.deepEqual(removed, [
      '        terminationGracePeriodSeconds: 30',
      '    metadata: {name: nested}',
    ]);
    assert.ok(added.some((line) => line.startsWith('    metadata: {name: nested, annotations: {')));
    assert.deepEqual(
      result.documents.map((d) => d.label),
      ['Deployment/api', 'Pod/nested'],
    );
  });

  it('any *List kind, and a Namespace inside a List applies to the pods of the same input', () => {
    const text = `apiVersion: v1
kind: NamespaceList
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: slow, annotations: {prestop-injector.io/delay-seconds: "25"}}
---
apiVersion: apps/v1
kind: DeploymentList
items:
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: d, namespace: slow}
  spec:
    template:
      spec:
        containers: [{name: a, image: a}]
`;
    const [, deployments] = (
      json(text) as { items: [unknown, { items: [{ spec: { template: PodLike } }] }] }
    ).items;
    assert.deepEqual(deployments.items[0].spec.template.spec.containers[0]!.lifecycle?.preStop, {
      sleep: { seconds: 25 },
    });
  });

  it('-o json of several documents, fed back in, gives the same objects; the second pass changes nothing', () => {
    const stream = `${MUTATED}---\n${UNTOUCHED.replace('%YAML 1.1\n', '')}\n---\n${KUBECTL_LIST}`;
    const first = inject(stream).json();
    const again = inject([{ name: 'list.json', text: first }]);
    assert.equal(again.json(), first, 'same objects, same JSON text');
    assert.equal(again.yaml(), first, 'nothing to change: the JSON text as it was');
    assert.match(first, /"progressDeadlineSeconds": 12345678901234567890,/);
  });
});

describe('empty documents', () => {
  it('a trailing ---, a comment-only document and an empty one are no objects in JSON, and kept in YAML', () => {
    const text = `# leading comment only
---
---
apiVersion: v1
kind: ConfigMap
metadata: {name: only}
---
# trailing comment-only document
---
`;
    assert.deepEqual(json(text), {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'only' },
    });
    assert.equal(inject(text).yaml(), text);
    assert.deepEqual(json('# nothing here\n'), { apiVersion: 'v1', kind: 'List', items: [] });
    assert.equal(inject('# nothing here\n').yaml(), '# nothing here\n');
  });
});

describe('several inputs', () => {
  it('are one stream: a separator between files, each file kept as it was', () => {
    const a = { name: 'a.yaml', text: 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}' };
    const b = {
      name: 'b.yaml',
      text: '%YAML 1.1\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n',
    };
    const c = {
      name: 'c.json',
      text: '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}',
    };
    const out = inject([a, b, c]).yaml();
    assert.equal(out, `${a.text}\n...\n${b.text}---\n${c.text}`);
    assert.deepEqual(
      (json(out) as { items: { metadata: { name: string } }[] }).items.map((i) => i.metadata.name),
      ['a', 'b', 'c'],
    );
  });

  it('warnings name the file and the document', () => {
    const pod = (name: string) =>
      `apiVersion: v1\nkind: Pod\nmetadata:\n  name: ${name}\n  annotations: {prestop-injector.io/mode: nap}\nspec:\n  containers: [{name: a, image: a}]\n`;
    const result = inject([
      { name: 'dir/one.yaml', text: pod('one') },
      { name: 'two.yaml', text: pod('two') },
    ]);
    assert.equal(result.warnings.length, 2);
    assert.match(result.warnings[0]!, /^dir\/one\.yaml: Pod\/one: .*"nap"/);
    assert.match(result.warnings[1]!, /^two\.yaml: Pod\/two: .*"nap"/);
  });
});
