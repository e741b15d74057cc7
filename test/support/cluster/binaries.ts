// The Kubernetes, etcd and helm binaries the tests run. They are built once
// per machine by scripts/install-test-tools.sh and cached outside the work
// tree; the script prints their paths (its tools.env) as KEY=VALUE lines.

import { spawn } from 'node:child_process';
import path from 'node:path';
import { repoRoot } from './processes.ts';

const installScript = path.join(repoRoot, 'scripts', 'install-test-tools.sh');

/** The binaries of one Kubernetes release that a node needs. */
export interface KubernetesRelease {
  /** e.g. v1.37.2 */
  version: string;
  kubeApiserver: string;
  kubeControllerManager: string;
  kubeScheduler: string;
  kubeProxy: string;
  kubelet: string;
}

export interface Tools {
  kubeApiserver: string;
  etcd: string;
  helm: string;
  kubectl: string;
  kubelet: string;
  kubeProxy: string;
  kubeControllerManager: string;
  kubeScheduler: string;
  kubeVersion: string;
  etcdVersion: string;
  helmVersion: string;
  /** Prometheus's rule-file parser, as the chart's alert tests run it. */
  promqlCheck: string;
  /** The current release's node binaries (the same paths as above). */
  current: KubernetesRelease;
  /** An older control plane for the version-skew tests (SKEW_*). */
  skew: KubernetesRelease;
  /** The oldest kubelet the skew tests run (OLDEST_KUBELET*). */
  oldestKubelet: { version: string; kubelet: string };
}

let toolsPromise: Promise<Tools> | undefined;

/**
 * Runs scripts/install-test-tools.sh once per process (instant when the
 * binaries are cached; a cold build takes tens of minutes) and returns the
 * binary paths.
 */
export function ensureTools(): Promise<Tools> {
  toolsPromise ??= runInstallScript();
  // A failed build should not be cached: a later call may retry.
  toolsPromise.catch(() => {
    toolsPromise = undefined;
  });
  return toolsPromise;
}

/** Tools from the script's KEY=VALUE output. */
export function parseToolsEnv(out: string): Tools {
  const env = new Map<string, string>();
  for (const line of out.split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m?.[1] !== undefined && m[2] !== undefined) env.set(m[1], m[2]);
  }
  const get = (key: string): string => {
    const value = env.get(key);
    if (!value) throw new Error(`install-test-tools.sh did not print ${key}=...; got:\n${out}`);
    return value;
  };
  const current: KubernetesRelease = {
    version: get('KUBE_VERSION'),
    kubeApiserver: get('KUBE_APISERVER'),
    kubeControllerManager: get('KUBE_CONTROLLER_MANAGER'),
    kubeScheduler: get('KUBE_SCHEDULER'),
    kubeProxy: get('KUBE_PROXY'),
    kubelet: get('KUBELET'),
  };
  return {
    kubeApiserver: current.kubeApiserver,
    etcd: get('ETCD'),
    helm: get('HELM'),
    kubectl: get('KUBECTL'),
    kubelet: current.kubelet,
    kubeProxy: current.kubeProxy,
    kubeControllerManager: current.kubeControllerManager,
    kubeScheduler: current.kubeScheduler,
    kubeVersion: current.version,
    etcdVersion: get('ETCD_VERSION'),
    helmVersion: get('HELM_VERSION'),
    promqlCheck: get('PROMQL_CHECK'),
    current,
    skew: {
      version: get('SKEW_VERSION'),
      kubeApiserver: get('SKEW_KUBE_APISERVER'),
      kubeControllerManager: get('SKEW_KUBE_CONTROLLER_MANAGER'),
      kubeScheduler: get('SKEW_KUBE_SCHEDULER'),
      kubeProxy: get('SKEW_KUBE_PROXY'),
      kubelet: get('SKEW_KUBELET'),
    },
    oldestKubelet: { version: get('OLDEST_KUBELET_VERSION'), kubelet: get('OLDEST_KUBELET') },
  };
}

function runInstallScript(): Promise<Tools> {
  return new Promise((resolve, reject) => {
    // stderr (progress, build failures) goes straight to ours; stdout carries
    // the KEY=VALUE result lines.
    const child = spawn('bash', [installScript], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      out += chunk;
    });
    child.once('error', reject);
    child.once('close', (code, signal) => {
      if (code !== 0) {
        reject(
          new Error(
            `${path.relative(repoRoot, installScript)} failed (exit ${code ?? signal}); ` +
              `see its output above. stdout:\n${out}`,
          ),
        );
        return;
      }
      try {
        resolve(parseToolsEnv(out));
      } catch (err) {
        reject(err as Error);
      }
    });
  });
}
