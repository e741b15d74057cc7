// The Dockerfile and .dockerignore, read as Docker reads them. The steps are
// run for real (npm ci, tsc, the entrypoint as uid 65532) by
// test/e2e/chart-install.test.ts; these are the fast checks.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  containerProcess,
  isIgnored,
  parseDockerfile,
  parseDockerignore,
  type Stage,
} from '../support/dockerfile.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const instructions = parseDockerfile(fs.readFileSync(path.join(root, 'Dockerfile'), 'utf8'));
const rules = parseDockerignore(fs.readFileSync(path.join(root, '.dockerignore'), 'utf8'));
const packageJson = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as {
  devDependencies: Record<string, string>;
};

describe('Dockerfile', () => {
  it('builds on the Node major the project pins, and runs on a distroless Node base', () => {
    const froms = instructions.filter((i) => i.op === 'FROM');
    const pinned = Number(packageJson.devDependencies['node']!.split('.')[0]);
    for (const from of froms) {
      const major = /(?:node:|nodejs)(\d+)/.exec(from.image)?.[1];
      assert.equal(Number(major), pinned, `${from.image} has Node ${pinned}`);
    }
    assert.match(froms.at(-1)!.image, /^gcr\.io\/distroless\/nodejs\d+-debian12/);
    // The runtime stage has no shell: nothing may RUN there.
    const last = instructions.findLastIndex((i) => i.op === 'FROM');
    assert.ok(!instructions.slice(last).some((i) => i.op === 'RUN'));
  });

  it('installs production dependencies only for the runtime, and runs as non-root', () => {
    const runs = instructions.filter((i) => i.op === 'RUN').map((i) => i.command);
    assert.ok(
      runs.some((c) => /^npm ci .*--omit=dev/.test(c)),
      'a production-only install',
    );
    assert.ok(
      runs.every((c) => !/^npm ci/.test(c) || c.includes('--ignore-scripts')),
      'no install scripts run',
    );
    const last = instructions.findLastIndex((i) => i.op === 'FROM');
    const runtime = instructions.slice(last);
    const user = runtime.find((i) => i.op === 'USER');
    assert.equal(user?.user, '65532:65532', 'numeric, so runAsNonRoot can verify it');
    const copies = runtime.filter((i) => i.op === 'COPY');
    assert.deepEqual(
      copies.map((c) => `${c.from ?? 'context'}:${c.sources.join(',')}`),
      ['context:package.json', 'deps:/app/node_modules', 'build:/app/dist'],
    );
  });

  it('starts the server with the base image node', () => {
    const last = instructions.findLastIndex((i) => i.op === 'FROM');
    const runtime = instructions.slice(last);
    const argvOf = (op: 'ENTRYPOINT' | 'CMD') => {
      const found = runtime.find((i) => i.op === op);
      return found !== undefined && 'argv' in found ? found.argv : undefined;
    };
    const entrypoint = argvOf('ENTRYPOINT');
    const cmd = argvOf('CMD');
    assert.deepEqual(entrypoint, ['/nodejs/bin/node']);
    assert.deepEqual(cmd, ['dist/cli.js', 'serve']);
  });
});

describe('.dockerignore', () => {
  it('lets in every file the Dockerfile copies from the context', () => {
    for (const copy of instructions) {
      if (copy.op !== 'COPY' || copy.from !== undefined) continue;
      for (const source of copy.sources) {
        assert.ok(fs.existsSync(path.join(root, source)), `${source} exists`);
        assert.equal(isIgnored(source, rules), false, `${source} is in the build context`);
      }
    }
    assert.equal(isIgnored('src/webhook/server.ts', rules), false, 'files under src too');
  });

  it('keeps keys, dependencies, build output and history out', () => {
    for (const file of [
      'certs/tls.key',
      'certs/ca.key',
      'node_modules/fastify/package.json',
      'dist/cli.js',
      '.git/config',
      'test/e2e/basic.test.ts',
      'charts/prestop-injector/values.yaml',
      'README.md',
      '.env',
    ]) {
      assert.equal(isIgnored(file, rules), true, `${file} is not sent to the build`);
    }
  });

  it('follows Docker: the last matching pattern wins, for a path or a parent', () => {
    const allowList = parseDockerignore('*\n!src\nsrc/secret.ts\n');
    assert.equal(isIgnored('src/a.ts', allowList), false);
    assert.equal(isIgnored('src/secret.ts', allowList), true);
    assert.equal(isIgnored('docs/a.md', allowList), true);
    const denyList = parseDockerignore('# comment\n*.md\nnode_modules\n');
    assert.equal(isIgnored('README.md', denyList), true);
    assert.equal(isIgnored('docs/a.md', denyList), false, '*.md matches the top level only');
    assert.equal(isIgnored('node_modules/x/y.js', denyList), true);
    const deep = parseDockerignore('**/*.key\n');
    assert.equal(isIgnored('certs/tls.key', deep), true);
    assert.equal(isIgnored('tls.key', deep), true);
    assert.equal(isIgnored('certs/tls.crt', deep), false);
    assert.equal(isIgnored('.git', parseDockerignore('*')), true, '* matches dot names, as in Go');
  });
});

describe('containerProcess', () => {
  const image = {
    base: { node: '/nodejs/bin/node' },
    entrypoint: ['/nodejs/bin/node'],
    cmd: ['dist/cli.js', 'serve'],
    workdir: '/app',
    root: '/images/runtime',
  } as unknown as Stage;

  it('resolves command and args as a container runtime does', () => {
    assert.deepEqual(containerProcess(image).args, ['dist/cli.js', 'serve'], 'CMD by default');
    assert.deepEqual(
      containerProcess(image, { args: ['-e', '1'] }).args,
      ['-e', '1'],
      'args replace CMD',
    );
    assert.deepEqual(
      containerProcess(image, { command: ['/nodejs/bin/node', 'x.js'] }).args,
      ['x.js'],
      'command replaces ENTRYPOINT and drops CMD',
    );
    assert.equal(
      containerProcess(image).file,
      path.join('/images/runtime', '/nodejs/bin/node'),
      "the base image's node, inside the layout",
    );
    assert.equal(containerProcess(image).cwd, path.join('/images/runtime', '/app'));
  });

  it('refuses what it cannot stand in for', () => {
    assert.throws(
      () => containerProcess(image, { command: ['/bin/sh', '-c', 'sleep 1'] }),
      /only the base image's node/,
    );
  });
});
