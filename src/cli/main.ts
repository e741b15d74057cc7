#!/usr/bin/env node
// prestop-injector: `serve` runs the webhook; `inject` mutates manifests offline.

import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import {
  capabilitiesFor,
  formatKubeVersion,
  parseKubeVersion,
  parseOverride,
  uniformVersions,
  type ClusterVersions,
  type Override,
} from '../core/capabilities.ts';
import {
  mergeSettings,
  parseLayer,
  BUILTIN_DEFAULTS,
  SETTING_SPECS,
  type SettingName,
} from '../core/policy.ts';
import type { ManagedCertificates } from '../cluster/certificates.ts';
import { createLogger } from '../webhook/log.ts';
import { buildConfig, ConfigError, PACKAGE_VERSION, readRawOptions, splitList } from './config.ts';
import { explainDocuments } from './explain.ts';
import { injectSources, InputError, type InputSource } from './inject.ts';
import { POLICY_USAGE, runPolicy } from './policy.ts';
import { startServer, type RunningServer } from './serve.ts';

const USAGE = `Usage:
  prestop-injector serve [--flag value ...]
      Runs the admission webhook. Every flag also reads an env var; see docs/operations.md.
  prestop-injector inject -f FILE|DIR|- [-f ...] [-o yaml|json] [--kube-version X.Y | --offline]
                          [--set key=value ...] [--distroless-patterns a,b] [--helper-sidecars a,b]
                          [--sleep-action auto|on|off] [--explain]
      Applies the webhook's mutation to Pods, workload pod templates and the items of Lists.
      -f repeats; a directory is read recursively (.yaml, .yml, .json files, in name order).
      YAML is read as Kubernetes reads it (YAML 1.1); what is not changed is written as it was.
      -o json prints one object for one document, else a v1 List (empty documents dropped).
      --kube-version names the API server and oldest kubelet. Without it, the versions are
        asked of the current kubeconfig's cluster (3 s at most); with --offline or no
        answer, hooks are planned for an unknown cluster (exec hooks, no sleep action).
      --set keys: ${Object.values(SETTING_SPECS)
        .map((s) => s.key.split('/')[1])
        .filter((k) => k !== 'inject')
        .join(', ')}, inject
      --explain prints each pod's termination timeline, before and after.
      Exit status: 0 done, 1 unreadable or unparseable input, 2 usage error.
  prestop-injector ipvs-reaper [--dry-run | --diagnose [--json]] [--flag value ...]
      Node agent: removes IPVS real servers of weight 0 whose pod is gone; see ipvs-reaper --help.
${POLICY_USAGE}  prestop-injector version
`;

class UsageError extends Error {}

const MANIFEST_FILE = /\.(?:ya?ml|json)$/;

/** The manifest files under a directory, depth first in name order, as kubectl walks one. */
function manifestFiles(dir: string): string[] {
  const entries = readdirSync(dir, { withFileTypes: true }).sort((a, b) =>
    a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
  );
  return entries.flatMap((entry) => {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) return manifestFiles(file);
    return MANIFEST_FILE.test(entry.name) ? [file] : [];
  });
}

function readInput(files: readonly string[]): InputSource[] {
  const sources: InputSource[] = [];
  for (const file of files) {
    const shown = file === '-' ? 'standard input' : file;
    try {
      if (file === '-') {
        sources.push({ name: 'stdin', text: readFileSync(0, 'utf8') });
        continue;
      }
      if (!statSync(file).isDirectory()) {
        sources.push({ name: file, text: readFileSync(file, 'utf8') });
        continue;
      }
      const found = manifestFiles(file);
      if (found.length === 0) throw new Error('no .yaml, .yml or .json file in it');
      for (const each of found) sources.push({ name: each, text: readFileSync(each, 'utf8') });
    } catch (error) {
      throw new InputError(`cannot read ${shown}: ${(error as Error).message}`);
    }
  }
  return sources;
}

interface InjectArgs {
  files: string[];
  output: 'yaml' | 'json';
  kubeVersion: string;
  offline: boolean;
  sets: Record<string, string>;
  distrolessPatterns: string[];
  helperSidecars: string[];
  sleepAction: Override;
  explain: boolean;
  help: boolean;
}

function parseInjectArgs(argv: readonly string[]): InjectArgs {
  const args: InjectArgs = {
    files: [],
    output: 'yaml',
    kubeVersion: '',
    offline: false,
    sets: {},
    distrolessPatterns: [],
    helperSidecars: [],
    sleepAction: 'auto',
    explain: false,
    help: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = () => {
      const next = argv[++i];
      if (next === undefined) throw new UsageError(`${arg} needs a value`);
      return next;
    };
    switch (arg) {
      case '-h':
      case '--help':
        args.help = true;
        return args;
      case '-f':
      case '--filename': {
        const file = value();
        if (file === '-' && args.files.includes('-')) {
          throw new UsageError('-f - (standard input) can be given once');
        }
        args.files.push(file);
        break;
      }
      case '-o':
      case '--output': {
        const output = value();
        if (output !== 'yaml' && output !== 'json')
          throw new UsageError(`-o must be yaml or json, not ${output}`);
        args.output = output;
        break;
      }
      case '--kube-version':
        args.kubeVersion = value();
        if (parseKubeVersion(args.kubeVersion) === null) {
          throw new UsageError(
            `--kube-version: ${JSON.stringify(args.kubeVersion)} is not a version like 1.33`,
          );
        }
        break;
      case '--offline':
        args.offline = true;
        break;
      case '--set': {
        const pair = value();
        const eq = pair.indexOf('=');
        if (eq <= 0) throw new UsageError(`--set takes key=value, got ${JSON.stringify(pair)}`);
        args.sets[pair.slice(0, eq)] = pair.slice(eq + 1);
        break;
      }
      case '--distroless-patterns':
        args.distrolessPatterns = splitList(value()).map((p) => p.toLowerCase());
        break;
      case '--helper-sidecars':
        args.helperSidecars = splitList(value());
        break;
      case '--sleep-action': {
        const parsed = parseOverride(value());
        if (parsed === null) throw new UsageError('--sleep-action must be auto, on or off');
        args.sleepAction = parsed;
        break;
      }
      case '--explain':
        args.explain = true;
        break;
      default:
        throw new UsageError(`unknown argument ${arg}`);
    }
  }
  if (args.files.length === 0) {
    throw new UsageError('inject needs -f FILE (or -f - for standard input)');
  }
  return args;
}

/** The versions to plan for, said once on stderr unless --kube-version gave them. */
async function versionsFor(args: InjectArgs): Promise<ClusterVersions> {
  if (args.kubeVersion !== '') return uniformVersions(parseKubeVersion(args.kubeVersion));
  const note = (text: string) => process.stderr.write(`note: ${text}\n`);
  // What an unknown version means for the hooks, unless --sleep-action overrides it.
  const unknownMeans =
    args.sleepAction === 'on'
      ? 'the sleep action, as --sleep-action on says'
      : 'exec hooks, no sleep action';
  const unknown = `planning for an unknown cluster: ${unknownMeans}`;
  if (args.offline) {
    note(`--offline and no --kube-version: ${unknown}`);
    return uniformVersions(null);
  }
  // Loaded here: the client library is needed only for this.
  const { lookupClusterVersions } = await import('../cluster/versions.ts');
  const lookup = await lookupClusterVersions();
  if (!lookup.found) {
    const asked = lookup.context ? ` (kubeconfig context ${JSON.stringify(lookup.context)})` : '';
    note(`no --kube-version, and no cluster answered${asked}: ${lookup.reason}; ${unknown}`);
    return uniformVersions(null);
  }
  const { server, oldestKubelet, sleepActionGate } = lookup.versions;
  const gate =
    sleepActionGate === false ? ' (its PodLifecycleSleepAction gate off: no sleep action)' : '';
  const from = `no --kube-version: planning for kubeconfig context ${JSON.stringify(lookup.context)}: API server ${formatKubeVersion(server)}${gate}`;
  if (lookup.kubeletUnknown !== undefined) {
    note(`${from}, kubelet version unknown (${lookup.kubeletUnknown}): ${unknownMeans}`);
  } else {
    note(`${from}, oldest kubelet ${formatKubeVersion(oldestKubelet)}`);
  }
  return lookup.versions;
}

async function runInject(argv: readonly string[]): Promise<number> {
  const args = parseInjectArgs(argv);
  if (args.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const keyOf = (name: SettingName) => SETTING_SPECS[name].key.split('/')[1]!;
  const known = new Set((Object.keys(SETTING_SPECS) as SettingName[]).map(keyOf));
  for (const key of Object.keys(args.sets)) {
    if (!known.has(key))
      throw new UsageError(`--set: unknown key ${key}; known: ${[...known].join(', ')}`);
  }
  const layer = parseLayer(args.sets, 'config', keyOf);
  const bad = layer.warnings[0];
  if (bad !== undefined) throw new UsageError(`--set ${bad.key}=${bad.value}: ${bad.reason}`);
  // Offline, the user asked for injection: it is on unless a pod or namespace says otherwise.
  const defaults = mergeSettings({ ...BUILTIN_DEFAULTS, inject: true }, layer.settings);
  const sources = readInput(args.files);
  const context = {
    defaults,
    capabilities: capabilitiesFor(await versionsFor(args), { sleepAction: args.sleepAction }),
    config: { distrolessPatterns: args.distrolessPatterns, helperSidecars: args.helperSidecars },
  };
  const result = injectSources(sources, context);
  let output: string;
  if (args.explain) {
    output = explainDocuments(result.documents, context.config, context.capabilities);
  } else output = args.output === 'json' ? result.json() : result.yaml();
  // After the output is made: writing it may add warnings of its own.
  for (const warning of result.warnings) process.stderr.write(`warning: ${warning}\n`);
  process.stdout.write(output);
  return 0;
}

async function runServe(argv: readonly string[]): Promise<void> {
  const config = buildConfig(readRawOptions(argv, process.env));
  const logger = createLogger(config.logLevel);
  // Loaded here, not at the top: `inject` needs neither. The Kubernetes
  // client is most of the process's memory: not loaded without a cluster.
  const { createMetrics } = await import('../webhook/metrics.ts');
  const { kubeconfigSource, NO_CLUSTER } = await import('../cluster/view.ts');
  let cluster = NO_CLUSTER;
  if (kubeconfigSource(config) === null) {
    logger.info('no cluster configured: using pod annotations and server config only');
  } else {
    const { startCluster } = await import('../cluster/informer.ts');
    cluster = await startCluster(config, logger);
  }
  // The metrics read the certificate of the server they are given to.
  const serving: { server?: RunningServer } = {};
  const metrics = createMetrics({
    version: PACKAGE_VERSION,
    cluster,
    capabilities: () => serving.server?.capabilities(),
    certificateNotAfterMs: () => serving.server?.certificates.current.notAfterMs,
  });
  let certificates: ManagedCertificates | undefined;
  if (config.runtimeCertificates !== null) {
    const { startRuntimeCertificates } = await import('../cluster/certificates.ts');
    certificates = await startRuntimeCertificates(
      config,
      {
        ...config.runtimeCertificates,
        namespace: config.ownNamespace,
        pollMs: config.certPollMs,
      },
      logger,
    );
  }
  const server = await startServer(config, logger, {
    cluster,
    observer: metrics,
    metrics: metrics.render,
    ...(certificates === undefined ? {} : { certificates }),
  });
  serving.server = server;
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping: readiness off, finishing in-flight admissions');
    const force = setTimeout(() => {
      logger.error('in-flight admissions did not finish in time; exiting');
      process.exit(1);
    }, config.shutdownDelayMs + 20_000);
    force.unref();
    server.stopReady();
    // Endpoints need a moment to drop this pod; keep answering meanwhile.
    const delay = new Promise((resolve) => setTimeout(resolve, config.shutdownDelayMs));
    delay
      .then(() => server.close())
      .then(
        () => {
          logger.info('stopped');
          process.exit(0);
        },
        (error: unknown) => {
          logger.error({ error: String(error) }, 'error while stopping');
          process.exit(1);
        },
      );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

export async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'serve':
        await runServe(rest);
        return -1;
      case 'inject':
        return await runInject(rest);
      case 'ipvs-reaper':
        return await (await import('../reaper/command.ts')).runIpvsReaper(rest);
      case 'policy':
        return runPolicy(rest);
      case 'version':
      case '--version':
        process.stdout.write(`prestop-injector ${PACKAGE_VERSION}\n`);
        return 0;
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command ${command}`);
    }
  } catch (error) {
    if (error instanceof UsageError || error instanceof ConfigError) {
      process.stderr.write(`prestop-injector: ${error.message}\n\n${USAGE}`);
      return 2;
    }
    if (error instanceof InputError) {
      process.stderr.write(`prestop-injector: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}

const code = await main(process.argv.slice(2));
if (code >= 0) process.exitCode = code;
