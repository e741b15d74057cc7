// The Dockerfile and .dockerignore, read as Docker reads them: the fast
// checks. buildah builds the image from them and a real node runs it
// (test/node/chart-install.test.ts).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseDocument } from 'yaml';
import { isIgnored, parseDockerfile, parseDockerignore } from '../support/dockerfile.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const instructions = parseDockerfile(fs.readFileSync(path.join(root, 'Dockerfile'), 'utf8'));
const rules = parseDockerignore(fs.readFileSync(path.join(root, '.dockerignore'), 'utf8'));
const packageJson = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as {
  version: string;
  license: string;
  devDependencies: Record<string, string>;
};
const chart = parseDocument(
  fs.readFileSync(path.join(root, 'charts', 'prestop-injector', 'Chart.yaml'), 'utf8'),
).toJS() as { sources: string[]; appVersion: string };

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

  it('starts the server with the base image node, with source maps', () => {
    const last = instructions.findLastIndex((i) => i.op === 'FROM');
    const runtime = instructions.slice(last);
    const argvOf = (op: 'ENTRYPOINT' | 'CMD') => {
      const found = runtime.find((i) => i.op === op);
      return found !== undefined && 'argv' in found ? found.argv : undefined;
    };
    // A startup error then names the .ts file and line: tsc writes the maps.
    assert.deepEqual(argvOf('ENTRYPOINT'), ['/nodejs/bin/node', '--enable-source-maps']);
    assert.deepEqual(argvOf('CMD'), ['dist/cli/main.js', 'serve']);
    const build = JSON.parse(fs.readFileSync(path.join(root, 'tsconfig.build.json'), 'utf8')) as {
      compilerOptions: { sourceMap?: boolean };
    };
    assert.equal(build.compilerOptions.sourceMap, true);
  });

  it('labels the image with its source, version, revision and licence (OCI)', () => {
    const last = instructions.findLastIndex((i) => i.op === 'FROM');
    const runtime = instructions.slice(last);
    const args = Object.fromEntries(
      runtime.flatMap((i) => (i.op === 'ARG' ? [[i.name, i.default]] : [])),
    );
    const labels = Object.assign(
      {},
      ...runtime.flatMap((i) => (i.op === 'LABEL' ? [i.vars] : [])),
    ) as Record<string, string>;
    assert.deepEqual(
      {
        source: labels['org.opencontainers.image.source'],
        version: labels['org.opencontainers.image.version'],
        revision: labels['org.opencontainers.image.revision'],
        licenses: labels['org.opencontainers.image.licenses'],
      },
      {
        source: chart.sources[0],
        version: '${VERSION}',
        revision: '${REVISION}',
        licenses: packageJson.license,
      },
    );
    assert.equal(args['VERSION'], packageJson.version, "the default version is the package's");
    assert.equal(args['VERSION'], chart.appVersion, "and the chart's appVersion");
    assert.ok('REVISION' in args, 'the revision is a build argument');
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
      'dist/cli/main.js',
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
