// The MutatingAdmissionPolicy's generator and the `policy` command, without
// an API server: the CEL is made from the planner's tables, the command
// takes serve's settings and refuses what the policy cannot carry, and the
// chart ships the generator's output. (test/apiserver/admission-policy.test.ts
// runs the policy itself against the webhook.)

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { chartPolicyTemplate, CHART_POLICY_TEMPLATE } from '../../scripts/render-chart-policy.ts';
import { buildConfig, OPTIONS, readRawOptions } from '../../src/cli/config.ts';
import { DEFAULT_POLICY_NAMESPACE, renderPolicy } from '../../src/cli/policy.ts';
import {
  admissionPolicy,
  JS_SPACE_CODE_POINTS,
  NOT_EXPRESSED,
  PARAM_KEYS,
  policyDescription,
} from '../../src/core/admission-policy.ts';
import { Annotation } from '../../src/core/annotations.ts';
import { BUILTIN_DEFAULTS, SETTING_SPECS, type SettingName } from '../../src/core/policy.ts';
import { SHELL_LESS_IMAGE_PATTERNS } from '../../src/core/sidecars.ts';
import { readStatus } from '../../src/core/status.ts';
import { SYSTEM_NAMESPACES } from '../../src/webhook/admission.ts';
import { container, pod, run } from '../support/pods.ts';

type Json = Record<string, unknown>;

function policyText(): string {
  return JSON.stringify(admissionPolicy({ name: 'p', systemNamespaces: SYSTEM_NAMESPACES }));
}

function documents(yaml: string): Json[] {
  return parseAllDocuments(yaml).map((doc) => doc.toJS() as Json);
}

describe('the admission policy generator', () => {
  it('writes out exactly the white space String.trim removes', () => {
    const listed = new Set<number>();
    for (const entry of JS_SPACE_CODE_POINTS) {
      if (typeof entry === 'number') listed.add(entry);
      else for (let c = entry[0]; c <= entry[1]; c++) listed.add(c);
    }
    for (let code = 0; code <= 0x10ffff; code++) {
      if (code >= 0xd800 && code <= 0xdfff) continue;
      const char = String.fromCodePoint(code);
      assert.equal(/\s/.test(char), listed.has(code), `U+${code.toString(16)}`);
      assert.equal(`a${char}`.trim() === 'a', listed.has(code), `trim, U+${code.toString(16)}`);
    }
  });

  it("reads its settings under serve's flag names", () => {
    // Each key, given as serve's flag, changes the setting it stands for.
    const changed: Partial<Record<keyof typeof PARAM_KEYS, string>> = {
      inject: 'enabled',
      mode: 'drain',
      delaySeconds: '17',
      drainTimeoutSeconds: '18',
      drainQuietSeconds: '19',
      sidecars: 'disabled',
      distrolessPatterns: 'x',
      helperSidecars: 'y',
    };
    const flags = new Set<string>(Object.values(OPTIONS).map((o) => o.flag));
    for (const [name, key] of Object.entries(PARAM_KEYS) as [keyof typeof PARAM_KEYS, string][]) {
      assert.ok(flags.has(key), `${key} is a flag of serve`);
      const before = buildConfig(readRawOptions([], {}));
      const after = buildConfig(readRawOptions([`--${key}`, changed[name]!], {}));
      const value = (c: typeof before) =>
        name in c.defaults ? c.defaults[name as SettingName] : c.planner[name as 'helperSidecars'];
      assert.notDeepEqual(value(after), value(before), `--${key} sets ${name}`);
    }
  });

  it("is made from the planner's tables: keys, bounds, words and defaults", () => {
    const text = policyText();
    // Sleep mode reads these from annotations; the drain settings only as params.
    for (const name of ['inject', 'mode', 'delaySeconds', 'containers', 'sidecars'] as const) {
      const { key } = SETTING_SPECS[name];
      assert.ok(text.includes(JSON.stringify(JSON.stringify(key)).slice(1, -1)), key);
    }
    for (const [name, { syntax }] of Object.entries(SETTING_SPECS)) {
      if (syntax.kind === 'integer') {
        assert.ok(text.includes(`>= ${syntax.min}`) && text.includes(`<= ${syntax.max}`), name);
      } else if (syntax.kind === 'words') {
        for (const word of Object.keys(syntax.words))
          assert.ok(text.includes(`\\"${word}\\"`), word);
      }
    }
    assert.ok(text.includes(`: ${BUILTIN_DEFAULTS.delaySeconds})`), 'the built-in delay');
    for (const pattern of SHELL_LESS_IMAGE_PATTERNS) assert.ok(text.includes(pattern), pattern);
    assert.ok(text.includes(Annotation.status.replace('/', '~1')), 'the status annotation');
  });

  it('says what it leaves to the webhook, and that it needs 1.30+ kubelets', () => {
    const description = policyDescription();
    for (const item of NOT_EXPRESSED) assert.ok(description.includes(item), item);
    assert.match(description, /every kubelet is 1\.30 or newer/);
    const metadata = admissionPolicy({ name: 'p', systemNamespaces: [] })['metadata'] as Json;
    assert.equal((metadata['annotations'] as Json)['kubernetes.io/description'], description);
  });

  it("the chart's template is the generator's output", () => {
    assert.equal(
      readFileSync(CHART_POLICY_TEMPLATE, 'utf8'),
      chartPolicyTemplate(),
      'run: node scripts/render-chart-policy.ts',
    );
  });
});

describe('prestop-injector policy', () => {
  it("prints the ConfigMap, the policy and its binding, with serve's defaults", () => {
    const docs = documents(renderPolicy([], {}));
    assert.deepEqual(
      docs.map((d) => d['kind']),
      ['ConfigMap', 'MutatingAdmissionPolicy', 'MutatingAdmissionPolicyBinding'],
    );
    const [params, policy, binding] = docs as [Json, Json, Json];
    assert.deepEqual(params['metadata'], {
      name: 'prestop-injector',
      namespace: DEFAULT_POLICY_NAMESPACE,
    });
    assert.deepEqual(params['data'], {
      'inject-default': 'disabled',
      mode: 'sleep',
      'delay-seconds': '10',
      'drain-timeout-seconds': '30',
      'drain-quiet-seconds': '0',
      sidecars: 'enabled',
      'distroless-patterns': '',
      'helper-sidecars': '',
    });
    assert.deepEqual(
      policy,
      admissionPolicy({ name: 'prestop-injector', systemNamespaces: SYSTEM_NAMESPACES }),
    );
    const spec = binding['spec'] as Json;
    assert.deepEqual(spec['paramRef'], {
      name: 'prestop-injector',
      namespace: DEFAULT_POLICY_NAMESPACE,
      parameterNotFoundAction: 'Allow',
    });
    assert.match(renderPolicy([], {}), /^# .*1\.36\+/);
  });

  it('takes flags over env vars, as serve does, and its own namespace from either', () => {
    const env = {
      PRESTOP_DELAY_SECONDS: '20',
      PRESTOP_HELPER_SIDECARS: 'a, b',
      POD_NAMESPACE: 'ops',
    };
    const [params] = documents(
      renderPolicy(['--delay-seconds=25', '--inject-default', 'enabled'], env),
    ) as [Json];
    assert.deepEqual(params['metadata'], { name: 'prestop-injector', namespace: 'ops' });
    const data = params['data'] as Json;
    assert.equal(data['delay-seconds'], '25');
    assert.equal(data['inject-default'], 'enabled');
    assert.equal(data['helper-sidecars'], 'a,b');
    // A server option in the environment is the server's: ignored.
    assert.doesNotThrow(() => renderPolicy([], { PRESTOP_PORT: 'not a port' }));
  });

  it('refuses what the policy cannot carry, saying why', () => {
    const refused: [string[], RegExp][] = [
      [['--mode', 'drain'], /drain mode runs a shell script/],
      [['--port', '9443'], /--port is a server option/],
      [['--kube-version', '1.35'], /needs Kubernetes 1\.36 or newer/],
      [['--sleep-action', 'off'], /only the sleep action/],
      [['--distroless-patterns', 'caf\u00e9'], /ASCII patterns only/],
      [['--delay-seconds', '3601'], /delay-seconds/],
    ];
    for (const [argv, message] of refused) {
      assert.throws(() => renderPolicy(argv, {}), message, argv.join(' '));
    }
    assert.doesNotThrow(() => renderPolicy(['--kube-version', '1.36'], {}));
  });
});

describe('the status record', () => {
  it('keeps one key order whichever container needs a section first', () => {
    // The first container hooked has no lifecycle: lc is needed before sleep.
    const mutation = run(
      pod([
        container('app'),
        container('web', { lifecycle: { postStart: { exec: { command: ['x'] } } } }),
      ]),
      { kube: '1.33' },
    );
    const text = mutation.pod.metadata!.annotations![Annotation.status]!;
    assert.deepEqual(Object.keys(JSON.parse(text) as Json), [
      'v',
      'mode',
      'delaySeconds',
      'grace',
      'hooks',
      'fp',
      'sleep',
      'lc',
    ]);
    assert.notEqual(readStatus(mutation.pod), null);
  });
});
