// The `inject` command as a user runs it: files, directories and standard
// input, exit codes, what goes to stdout and to stderr, and the cluster
// version lookup when the kubeconfig's cluster is missing, refuses or hangs.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { PodLike } from '../../src/core/types.ts';
import { scratchDir } from '../support/scratch.ts';

const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs the CLI with no kubeconfig of the developer's in sight. */
function cli(args: string[], options: { input?: string; env?: Record<string, string> } = {}) {
  const env: Record<string, string | undefined> = { ...process.env, HOME: home, ...options.env };
  if (options.env?.['KUBECONFIG'] === undefined) delete env['KUBECONFIG'];
  delete env['KUBERNETES_SERVICE_HOST'];
  const started = Date.now();
  return new Promise<Run>((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr, ms: Date.now() - started }));
    child.stdin.end(options.input ?? '');
  });
}

const home = scratchDir('prestop-home-');

function write(dir: string, name: string, text: string): string {
  const file = join(dir, name);
  mkdirSync(join(file, '..'), { recursive: true });
  writeFileSync(file, text);
  return file;
}

const pod = (name: string, extra = '') =>
  `apiVersion: v1\nkind: Pod\nmetadata:\n  name: ${name}\n${extra}spec:\n  containers:\n  - name: a\n    image: a\n`;

function items(stdout: string): PodLike[] {
  return (JSON.parse(stdout) as { items: PodLike[] }).items;
}

describe('inject: arguments and exit codes', () => {
  it('--help and -h print the usage on stdout and exit 0', async () => {
    for (const flag of ['--help', '-h']) {
      const run = await cli(['inject', flag]);
      assert.equal(run.code, 0);
      assert.equal(run.stderr, '');
      assert.match(run.stdout, /inject -f FILE\|DIR\|- \[-f \.\.\.\]/);
      assert.match(run.stdout, /--offline/);
    }
  });

  it('usage errors exit 2 with the usage on stderr', async () => {
    for (const args of [
      ['inject'],
      ['inject', '-f', '-', '--nonsense'],
      ['inject', '-f', '-', '-o', 'xml'],
      ['inject', '-f', '-', '-f', '-'],
      ['inject', '-f', '-', '--kube-version', 'latest'],
      ['inject', '-f'],
    ]) {
      const run = await cli(args);
      assert.equal(run.code, 2, args.join(' '));
      assert.match(run.stderr, /^prestop-injector: .*\n\nUsage:/);
      assert.equal(run.stdout, '');
    }
  });

  it('input that cannot be read or parsed exits 1, naming the file, line and column', async () => {
    const dir = scratchDir('prestop-bad-');
    const bad = write(dir, 'bad.yaml', `${pod('fine')}---\nkind: Pod\nspec: [unclosed\n`);
    const parse = await cli(['inject', '--offline', '-f', bad]);
    assert.equal(parse.code, 1);
    assert.match(parse.stderr, /bad\.yaml: cannot parse input: .*line \d+, column \d+/);
    assert.equal(parse.stdout, '', 'nothing half-written');

    const missing = await cli(['inject', '--offline', '-f', join(dir, 'absent.yaml')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /cannot read .*absent\.yaml: ENOENT/);

    const empty = scratchDir('prestop-empty-');
    write(empty, 'notes.txt', 'not a manifest');
    const none = await cli(['inject', '--offline', '-f', empty]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no \.yaml, \.yml or \.json file/);
  });
});

describe('inject: several files and directories', () => {
  it('-f repeats, a directory is read recursively in name order, other files skipped', async () => {
    const dir = scratchDir('prestop-tree-');
    write(dir, 'b.yaml', pod('b'));
    write(dir, 'a/z.yml', pod('a-z'));
    write(
      dir,
      'a/c.json',
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'a-c' },
        spec: { containers: [{ name: 'a', image: 'a' }] },
      }),
    );
    write(dir, 'a/deeper/d.yaml', `${pod('a-deeper-d')}---\n# trailing comment\n`);
    write(dir, 'README.md', '# not a manifest\n');
    write(dir, 'values.yaml.tmpl', 'not: read\n');
    const single = write(scratchDir('prestop-single-'), 'first.yaml', pod('first'));

    const run = await cli(['inject', '--offline', '-f', single, '-f', dir, '-o', 'json']);
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(
      items(run.stdout).map((p) => p.metadata?.name),
      ['first', 'a-c', 'a-deeper-d', 'a-z', 'b'],
    );
    assert.ok(items(run.stdout).every((p) => p.spec.containers[0]!.lifecycle?.preStop));

    const yaml = await cli(['inject', '--offline', '-f', single, '-f', dir]);
    assert.equal(yaml.code, 0, yaml.stderr);
    const names = [...yaml.stdout.matchAll(/^ {2}name: (\S+)$/gm)].map((m) => m[1]);
    assert.deepEqual(names, ['first', 'a-deeper-d', 'a-z', 'b']);
    assert.match(
      yaml.stdout,
      /\n---\n\{"apiVersion":"v1","kind":"Pod","metadata":\{"name":"a-c"/,
      'JSON file kept JSON, after a separator',
    );
    assert.match(yaml.stdout, /# trailing comment\n---\n/);
  });

  it('warnings go to stderr, each naming its file and document; stdout holds only manifests', async () => {
    const dir = scratchDir('prestop-warn-');
    write(dir, 'one.yaml', pod('w', '  annotations:\n    prestop-injector.io/mode: nap\n'));
    const run = await cli(['inject', '-f', dir, '--kube-version', '1.33']);
    assert.equal(run.code, 0);
    assert.match(
      run.stderr,
      new RegExp(
        `^warning: ${join(dir, 'one.yaml').replace(/[.\\/]/g, '\\$&')}: Pod/w: .*"nap"`,
        'm',
      ),
    );
    assert.doesNotMatch(run.stdout, /warning|note/);
  });

  it('-o json of a multi-document file, fed back in, gives the same objects and changes nothing', async () => {
    const dir = scratchDir('prestop-round-');
    const file = write(
      dir,
      'stream.yaml',
      `${pod('x')}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {mode: "0400", n: "1e3"}\nbinaryData: null\n---\n`,
    );
    const first = await cli(['inject', '-f', file, '--kube-version', '1.33', '-o', 'json']);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(items(first.stdout).length, 2, 'the empty last document is no item');
    const again = await cli(['inject', '-f', '-', '--kube-version', '1.33', '-o', 'json'], {
      input: first.stdout,
    });
    assert.equal(again.stdout, first.stdout);
    const asYaml = await cli(['inject', '-f', '-', '--kube-version', '1.33'], {
      input: first.stdout,
    });
    assert.equal(asYaml.stdout, first.stdout, 'nothing to change: the JSON text as it was');
  });

  it('YAML 1.1 numbers reach JSON as Kubernetes reads them, big integers exact', async () => {
    const text = `apiVersion: v1
kind: Pod
metadata: {name: s}
spec:
  containers: [{name: a, image: a}]
  volumes:
  - name: v
    secret: {secretName: s, defaultMode: 0400}
  activeDeadlineSeconds: 12345678901234567890
  priority: 0x1F
`;
    const run = await cli(['inject', '-f', '-', '--kube-version', '1.33', '-o', 'json'], {
      input: text,
    });
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /"defaultMode": 256\n/);
    assert.match(run.stdout, /"activeDeadlineSeconds": 12345678901234567890,\n/);
    assert.match(run.stdout, /"priority": 31,?\n/);
    const yaml = await cli(['inject', '-f', '-', '--kube-version', '1.33'], { input: text });
    for (const kept of [
      'defaultMode: 0400}',
      'activeDeadlineSeconds: 12345678901234567890\n',
      'priority: 0x1F\n',
    ]) {
      assert.ok(yaml.stdout.includes(kept), kept);
    }
  });
});

/** Accepts connections and never answers. */
async function silentServer(): Promise<{ port: number; close(): void }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close() {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A plain-HTTP stand-in for an API server (as `kubectl proxy` serves one). */
async function fakeApiServer(
  nodes: 'hang' | 'table' | 'list',
  server131WithGate?: 0 | 1,
): Promise<{ url: string; close(): void }> {
  const server = http.createServer((request, response) => {
    const send = (body: unknown) => {
      response.setHeader('content-type', 'application/json');
      response.end(JSON.stringify(body));
    };
    if (server131WithGate !== undefined) {
      if (request.url === '/version') return send({ gitVersion: 'v1.31.4' });
      if (request.url === '/metrics') {
        // As a real API server writes it, among thousands of other lines.
        return response.end(
          `# HELP x\nkubernetes_feature_enabled{name="InPlacePodVerticalScaling",stage="ALPHA"} 0\n` +
            `kubernetes_feature_enabled{name="PodLifecycleSleepAction",stage="BETA"} ${server131WithGate}\n`,
        );
      }
    }
    if (request.url === '/version') return send({ major: '1', minor: '34', gitVersion: 'v1.34.1' });
    if (!request.url?.startsWith('/api/v1/nodes')) return send({});
    if (nodes === 'hang') return undefined;
    if (nodes === 'list') {
      return send({
        kind: 'NodeList',
        items: ['v1.34.1', 'v1.32.0'].map((v) => ({ status: { nodeInfo: { kubeletVersion: v } } })),
      });
    }
    assert.match(request.headers.accept ?? '', /as=Table/);
    return send({
      kind: 'Table',
      columnDefinitions: ['Name', 'Status', 'Roles', 'Age', 'Version'].map((name) => ({ name })),
      rows: [
        { cells: ['a', 'Ready', '', '1d', 'v1.34.1'] },
        { cells: ['b', 'Ready', '', '1d', 'v1.30.9+k3s1'] },
      ],
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close() {
      server.closeAllConnections();
      server.close();
    },
  };
}

function kubeconfigFor(server: string): string {
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'c', cluster: { server, 'insecure-skip-tls-verify': true } }],
    users: [{ name: 'u', user: { token: 'not-a-real-token' } }],
    contexts: [{ name: 'dead', context: { cluster: 'c', user: 'u' } }],
    'current-context': 'dead',
  };
  return write(scratchDir('prestop-kubeconfig-'), 'config', JSON.stringify(config));
}

describe('inject: pods a mesh will inject at admission', () => {
  it('warns that only the webhook can order a proxy added at admission', async () => {
    const text = [
      'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    istio-injection: enabled',
      'apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  containers: [{name: web, image: nginx}]',
      'apiVersion: v1\nkind: Pod\nmetadata:\n  name: api\n  annotations: {linkerd.io/inject: enabled}\nspec:\n  containers: [{name: api, image: nginx}]',
      'apiVersion: v1\nkind: Pod\nmetadata:\n  name: plain\nspec:\n  containers: [{name: plain, image: nginx}]',
    ].join('\n---\n');
    const run = await cli(['inject', '-f', '-', '--offline'], { input: text });
    assert.equal(run.code, 0, run.stderr);
    assert.match(
      run.stderr,
      /Pod\/web: Istio will add its proxy at admission \(namespace label istio-injection=enabled\)/,
    );
    assert.match(run.stderr, /Pod\/api: Linkerd will add its proxy at admission/);
    assert.doesNotMatch(run.stderr, /Pod\/plain: .*at admission/);
  });
});

describe('inject without --kube-version: the cluster is asked, and the answer said once', () => {
  let silent: { port: number; close(): void };
  before(async () => {
    silent = await silentServer();
  });
  after(() => silent.close());

  const unknown = /planning for an unknown cluster: exec hooks, no sleep action\n$/;

  it('no kubeconfig: an unknown cluster, said once', async () => {
    const run = await cli(['inject', '-f', '-'], { input: pod('p') });
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /^note: no --kube-version, and no cluster answered: no kubeconfig; /);
    assert.match(run.stderr, unknown);
    assert.equal(run.stderr.split('\n').length, 2, 'one line');
    assert.match(run.stdout, /- sleep 10/);
  });

  it('a cluster that refuses connections: said with the reason', async () => {
    const run = await cli(['inject', '-f', '-'], {
      input: pod('p'),
      env: { KUBECONFIG: kubeconfigFor(`https://127.0.0.1:${await closedPort()}`) },
    });
    assert.equal(run.code, 0, run.stderr);
    assert.match(
      run.stderr,
      /^note: no --kube-version, and no cluster answered \(kubeconfig context "dead"\): .*ECONNREFUSED/,
    );
    assert.match(run.stderr, unknown);
  });

  it('a cluster that never answers does not hang the CLI: 3 s, then an unknown cluster', async () => {
    const run = await cli(['inject', '-f', '-'], {
      input: pod('p'),
      env: { KUBECONFIG: kubeconfigFor(`https://127.0.0.1:${silent.port}`) },
    });
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /no answer within 3 s; planning for an unknown cluster/);
    assert.ok(run.ms >= 2_900 && run.ms < 8_000, `took ${run.ms} ms`);
    assert.match(run.stdout, /- sleep 10/);
  });

  it('the oldest kubelet, from the node table or a plain node list; a slow node list leaves it unknown', async () => {
    for (const [nodes, said] of [
      ['table', /API server 1\.34, oldest kubelet 1\.30\n$/],
      ['list', /API server 1\.34, oldest kubelet 1\.32\n$/],
      [
        'hang',
        /API server 1\.34, kubelet version unknown \(listing nodes: no answer within 3 s\): exec hooks, no sleep action\n$/,
      ],
    ] as const) {
      const api = await fakeApiServer(nodes);
      try {
        const run = await cli(['inject', '-f', '-'], {
          input: pod('p'),
          env: { KUBECONFIG: kubeconfigFor(api.url) },
        });
        assert.equal(run.code, 0, run.stderr);
        assert.match(
          run.stderr,
          /^note: no --kube-version: planning for kubeconfig context "dead": /,
        );
        assert.match(run.stderr, said);
        assert.match(run.stdout, nodes === 'hang' ? /- sleep 10/ : /seconds: 10/);
      } finally {
        api.close();
      }
    }
  });

  it('a 1.29-1.33 server: its own sleep-action gate, read from its /metrics, decides', async () => {
    for (const gate of [0, 1] as const) {
      const api = await fakeApiServer('list', gate);
      try {
        const run = await cli(['inject', '-f', '-'], {
          input: pod('p'),
          env: { KUBECONFIG: kubeconfigFor(api.url) },
        });
        assert.equal(run.code, 0, run.stderr);
        if (gate === 0) {
          assert.match(run.stderr, /API server 1\.31 \(its PodLifecycleSleepAction gate off/);
          assert.match(run.stdout, /- sleep 10/, 'exec sleep: the server would drop the action');
        } else {
          assert.doesNotMatch(run.stderr, /gate off/);
          assert.match(run.stdout, /seconds: 10/);
        }
      } finally {
        api.close();
      }
    }
  });

  it('--offline skips the lookup, --kube-version makes it needless', async () => {
    const env = { KUBECONFIG: kubeconfigFor(`https://127.0.0.1:${silent.port}`) };
    const offline = await cli(['inject', '-f', '-', '--offline'], { input: pod('p'), env });
    assert.ok(offline.ms < 2_900, `took ${offline.ms} ms`);
    assert.match(
      offline.stderr,
      /^note: --offline and no --kube-version: planning for an unknown cluster/,
    );
    const named = await cli(['inject', '-f', '-', '--kube-version', '1.33'], {
      input: pod('p'),
      env,
    });
    assert.ok(named.ms < 2_900, `took ${named.ms} ms`);
    assert.equal(named.stderr, '');
    assert.match(named.stdout, /seconds: 10/);
  });
});
