import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { buildConfig, ConfigError, OPTIONS, readRawOptions } from '../../src/cli/config.ts';
import { Annotation } from '../../src/core/annotations.ts';
import { capabilitiesFor, parseKubeVersion, uniformVersions } from '../../src/core/capabilities.ts';

const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const OPERATIONS = readFileSync(new URL('../../docs/operations.md', import.meta.url), 'utf8');

describe('config', () => {
  it('flags win over env vars, which win over defaults', () => {
    const raw = readRawOptions(['--delay-seconds', '20', '--mode=drain'], {
      PRESTOP_DELAY_SECONDS: '5',
      PRESTOP_INJECT_DEFAULT: 'enabled',
    });
    const config = buildConfig(raw);
    assert.equal(config.defaults.delaySeconds, 20);
    assert.equal(config.defaults.mode, 'drain');
    assert.equal(config.defaults.inject, true);
    assert.equal(
      buildConfig(readRawOptions([], {})).defaults.inject,
      false,
      'the webhook is opt-in by default',
    );
  });

  it('bad config stops with a message naming the flag', () => {
    const cases: [string[], RegExp][] = [
      [['--delay-seconds', 'ten'], /--delay-seconds/],
      [['--mode', 'nap'], /--mode/],
      [['--port', '99999'], /--port/],
      [['--kube-version', 'latest'], /--kube-version/],
      [['--sleep-action', 'maybe'], /--sleep-action/],
    ];
    for (const [argv, pattern] of cases) {
      assert.throws(
        () => buildConfig(readRawOptions(argv, {})),
        (error: Error) => error instanceof ConfigError && pattern.test(error.message),
      );
    }
    assert.throws(() => readRawOptions(['--nope', '1'], {}), /unknown flag --nope/);
    assert.throws(() => readRawOptions(['--port'], {}), /needs a value/);
  });

  it('docs/operations.md documents every option, flag and env var, with its default', () => {
    for (const option of Object.values(OPTIONS)) {
      const row = OPERATIONS.split('\n').find((line) =>
        line.startsWith(`| \`--${option.flag}\` |`),
      );
      assert.ok(row, `docs/operations.md row for --${option.flag}`);
      assert.ok(row.includes(`\`${option.env}\``), `docs/operations.md env for --${option.flag}`);
      assert.ok(
        row.includes(option.default === '' ? '(empty)' : `\`${option.default}\``),
        `docs/operations.md default for --${option.flag}`,
      );
    }
  });

  it('the README documents every annotation', () => {
    for (const key of Object.values(Annotation))
      assert.ok(README.includes(`\`${key}\``), `README documents ${key}`);
  });
});

describe('capabilities', () => {
  it('derive from the server version; unknown means none', () => {
    assert.deepEqual(parseKubeVersion('v1.31.4-eks-1234'), { major: 1, minor: 31 });
    assert.equal(parseKubeVersion('nonsense'), null);
    const at = (v: string | null) => capabilitiesFor(uniformVersions(parseKubeVersion(v)));
    assert.equal(at('1.29').sleepAction, false);
    assert.equal(at('1.29').nativeSidecars, true);
    assert.equal(at('1.28').nativeSidecars, false);
    assert.equal(at('1.30').sleepAction, true);
    assert.equal(at('1.32').zeroSleep, false);
    assert.equal(at('1.33').zeroSleep, true);
    assert.equal(at(null).sleepAction, false);
    assert.equal(at('1.28').sleepAction, false);
    assert.equal(
      capabilitiesFor(uniformVersions(parseKubeVersion('1.28')), { sleepAction: 'on' }).sleepAction,
      true,
    );
    assert.equal(
      capabilitiesFor(uniformVersions(parseKubeVersion('1.34')), { sleepAction: 'off' })
        .sleepAction,
      false,
    );
  });

  it('need the API server and the oldest kubelet both at 1.30, and the gate not off', () => {
    const v = parseKubeVersion;
    const sleep = (versions: Parameters<typeof capabilitiesFor>[0]) =>
      capabilitiesFor(versions).sleepAction;
    assert.equal(sleep({ server: v('1.31'), oldestKubelet: v('1.31') }), true);
    assert.equal(sleep({ server: v('1.31'), oldestKubelet: v('1.29') }), false, 'a 1.29 kubelet');
    assert.equal(sleep({ server: v('1.29'), oldestKubelet: v('1.31') }), false, 'a 1.29 server');
    assert.equal(sleep({ server: v('1.37'), oldestKubelet: null }), false, 'no node list yet');
    assert.equal(sleep({ server: null, oldestKubelet: v('1.37') }), false);
    assert.equal(
      sleep({ server: v('1.31'), oldestKubelet: v('1.31'), sleepActionGate: false }),
      false,
      'the server gate off',
    );
    assert.equal(
      sleep({ server: v('1.31'), oldestKubelet: v('1.31'), sleepActionGate: true }),
      true,
    );
    assert.equal(
      capabilitiesFor({ server: v('1.37'), oldestKubelet: v('1.32') }).nativeSidecars,
      true,
    );
  });
});
