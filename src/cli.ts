#!/usr/bin/env node
// prestop-injector: `serve` runs the webhook; `inject` mutates manifests offline.

import { readFileSync } from 'node:fs';
import { buildConfig, ConfigError, readRawOptions, splitList } from './config.ts';
import {
  capabilitiesFor,
  parseKubeVersion,
  parseOverride,
  type Override,
} from './core/capabilities.ts';
import {
  mergeSettings,
  parseLayer,
  BUILTIN_DEFAULTS,
  SETTING_SPECS,
  type SettingName,
} from './core/policy.ts';
import { injectDocuments, InputError } from './inject.ts';
import { createLogger } from './log.ts';
import { explainDocuments } from './explain.ts';
import { startServer, type RunningServer } from './serve.ts';

const USAGE = `Usage:
  prestop-injector serve [--flag value ...]
      Runs the admission webhook. Every flag also reads an env var; see README.
  prestop-injector inject -f FILE|- [-o yaml|json] [--kube-version X.Y] [--set key=value ...]
                          [--distroless-patterns a,b] [--helper-sidecars a,b] [--explain]
      Applies the webhook's mutation to Pods and workload pod templates.
      --set keys: ${Object.values(SETTING_SPECS)
        .map((s) => s.key.split('/')[1])
        .filter((k) => k !== 'inject')
        .join(', ')}, inject
      --explain prints each pod's termination timeline, before and after.
  prestop-injector version
`;

class UsageError extends Error {}

function readInput(file: string): string {
  try {
    return file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
  } catch (error) {
    throw new InputError(
      `cannot read ${file === '-' ? 'standard input' : file}: ${(error as Error).message}`,
    );
  }
}

interface InjectArgs {
  file: string;
  output: 'yaml' | 'json';
  kubeVersion: string;
  sets: Record<string, string>;
  distrolessPatterns: string[];
  helperSidecars: string[];
  sleepAction: Override;
  explain: boolean;
}

function parseInjectArgs(argv: readonly string[]): InjectArgs {
  const args: InjectArgs = {
    file: '',
    output: 'yaml',
    kubeVersion: '',
    sets: {},
    distrolessPatterns: [],
    helperSidecars: [],
    sleepAction: 'auto',
    explain: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = () => {
      const next = argv[++i];
      if (next === undefined) throw new UsageError(`${arg} needs a value`);
      return next;
    };
    switch (arg) {
      case '-f':
      case '--filename':
        args.file = value();
        break;
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
  if (args.file === '') throw new UsageError('inject needs -f FILE (or -f - for standard input)');
  return args;
}

function runInject(argv: readonly string[]): number {
  const args = parseInjectArgs(argv);
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
  const context = {
    defaults,
    capabilities: capabilitiesFor(parseKubeVersion(args.kubeVersion), {
      sleepAction: args.sleepAction,
    }),
    config: { distrolessPatterns: args.distrolessPatterns, helperSidecars: args.helperSidecars },
  };
  const result = injectDocuments(readInput(args.file), context);
  for (const warning of result.warnings) process.stderr.write(`warning: ${warning}\n`);
  if (args.explain) {
    process.stdout.write(explainDocuments(result.documents));
  } else {
    process.stdout.write(args.output === 'json' ? result.json() : result.yaml());
  }
  return 0;
}

async function runServe(argv: readonly string[]): Promise<void> {
  const config = buildConfig(readRawOptions(argv, process.env));
  const logger = createLogger(config.logLevel);
  // Loaded here, not at the top: `inject` needs neither.
  const { startClusterThread } = await import('./cluster-thread.ts');
  const { createMetrics } = await import('./metrics.ts');
  const cluster = await startClusterThread(config, logger);
  // The metrics read the certificate of the server they are given to.
  const serving: { server?: RunningServer } = {};
  const metrics = createMetrics({
    cluster,
    certificateNotAfterMs: () => serving.server?.certificates.current.notAfterMs,
  });
  const server = await startServer(config, logger, {
    cluster,
    observe: metrics.observe,
    metrics: metrics.render,
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
        return runInject(rest);
      case 'version':
      case '--version': {
        const pkg = JSON.parse(
          readFileSync(new URL('../package.json', import.meta.url), 'utf8'),
        ) as { version: string };
        process.stdout.write(`prestop-injector ${pkg.version}\n`);
        return 0;
      }
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
