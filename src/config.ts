// Server and CLI configuration: one table of options, each settable by flag
// or environment variable (flags win). The README's configuration table is
// checked against this table by a test.

import {
  capabilitiesFor,
  parseKubeVersion,
  parseOverride,
  type Capabilities,
  type CapabilityOverrides,
  type Override,
} from './core/capabilities.ts';
import type { PlannerConfig } from './core/planner.ts';
import {
  BUILTIN_DEFAULTS,
  mergeSettings,
  parseLayer,
  type SettingName,
  type Settings,
} from './core/policy.ts';
import { ADMISSION_LOG_MODES, type AdmissionLogMode } from './webhook/admission-log.ts';

export interface OptionSpec {
  flag: string;
  env: string;
  default: string;
  description: string;
}

/** Which option sets the server-wide default of each setting. */
const SETTING_OPTIONS: Partial<Record<SettingName, OptionName>> = {
  inject: 'injectDefault',
  mode: 'mode',
  delaySeconds: 'delaySeconds',
  drainTimeoutSeconds: 'drainTimeoutSeconds',
  drainQuietSeconds: 'drainQuietSeconds',
  sidecars: 'sidecars',
};

export const OPTIONS = {
  port: {
    flag: 'port',
    env: 'PRESTOP_PORT',
    default: '8443',
    description: 'HTTPS port of POST /mutate',
  },
  host: {
    flag: 'host',
    env: 'PRESTOP_HOST',
    default: '0.0.0.0',
    description: 'Address both listeners bind to',
  },
  healthPort: {
    flag: 'health-port',
    env: 'PRESTOP_HEALTH_PORT',
    default: '8081',
    description: 'Plain-HTTP port of /healthz, /readyz and /metrics',
  },
  tlsCert: {
    flag: 'tls-cert',
    env: 'PRESTOP_TLS_CERT',
    default: 'certs/tls.crt',
    description: 'Serving certificate (PEM); reloaded when it changes',
  },
  tlsKey: {
    flag: 'tls-key',
    env: 'PRESTOP_TLS_KEY',
    default: 'certs/tls.key',
    description: 'Serving key (PEM); reloaded when it changes',
  },
  certPollSeconds: {
    flag: 'cert-poll-seconds',
    env: 'PRESTOP_CERT_POLL_SECONDS',
    default: '10',
    description: 'How often the certificate files are polled, besides file watching',
  },
  injectDefault: {
    flag: 'inject-default',
    env: 'PRESTOP_INJECT_DEFAULT',
    default: 'disabled',
    description: 'Inject into pods whose namespace and pod say nothing (enabled/disabled)',
  },
  mode: {
    flag: 'mode',
    env: 'PRESTOP_MODE',
    default: BUILTIN_DEFAULTS.mode,
    description: 'Default hook mode (sleep/drain)',
  },
  delaySeconds: {
    flag: 'delay-seconds',
    env: 'PRESTOP_DELAY_SECONDS',
    default: String(BUILTIN_DEFAULTS.delaySeconds),
    description: 'Default preStop delay, 0..3600',
  },
  drainTimeoutSeconds: {
    flag: 'drain-timeout-seconds',
    env: 'PRESTOP_DRAIN_TIMEOUT_SECONDS',
    default: String(BUILTIN_DEFAULTS.drainTimeoutSeconds),
    description: 'Default drain timeout, 1..3600',
  },
  drainQuietSeconds: {
    flag: 'drain-quiet-seconds',
    env: 'PRESTOP_DRAIN_QUIET_SECONDS',
    default: String(BUILTIN_DEFAULTS.drainQuietSeconds),
    description:
      'Default drain quiet period (end after this long without TCP traffic), 0..3600; 0: off',
  },
  sidecars: {
    flag: 'sidecars',
    env: 'PRESTOP_SIDECARS',
    default: 'enabled',
    description: 'Order mesh proxies and helper sidecars (enabled/disabled)',
  },
  kubeVersion: {
    flag: 'kube-version',
    env: 'PRESTOP_KUBE_VERSION',
    default: '',
    description:
      'Kubernetes version to plan for, e.g. 1.33; empty: read from the cluster, or unknown',
  },
  sleepAction: {
    flag: 'sleep-action',
    env: 'PRESTOP_SLEEP_ACTION',
    default: 'auto',
    description: 'Native sleep action: auto (1.30+), on or off',
  },
  distrolessPatterns: {
    flag: 'distroless-patterns',
    env: 'PRESTOP_DISTROLESS_PATTERNS',
    default: '',
    description: 'Comma-separated image substrings with no shell or sleep, besides "distroless"',
  },
  helperSidecars: {
    flag: 'helper-sidecars',
    env: 'PRESTOP_HELPER_SIDECARS',
    default: '',
    description: 'Comma-separated names of other containers that must outlive the app',
  },
  cluster: {
    flag: 'cluster',
    env: 'PRESTOP_CLUSTER',
    default: 'auto',
    description:
      'Watch the cluster (namespaces, version): auto (when a kubeconfig or in-cluster config exists), on or off',
  },
  kubeconfig: {
    flag: 'kubeconfig',
    env: 'KUBECONFIG',
    default: '',
    description: 'Kubeconfig file; empty: in-cluster config or ~/.kube/config',
  },
  ownNamespace: {
    flag: 'own-namespace',
    env: 'POD_NAMESPACE',
    default: '',
    description: "The webhook's own namespace, never injected",
  },
  shutdownDelaySeconds: {
    flag: 'shutdown-delay-seconds',
    env: 'PRESTOP_SHUTDOWN_DELAY_SECONDS',
    default: '0',
    description: 'On SIGTERM, seconds to keep serving with readiness off before closing',
  },
  logLevel: {
    flag: 'log-level',
    env: 'PRESTOP_LOG_LEVEL',
    default: 'info',
    description: 'pino log level',
  },
  admissionLog: {
    flag: 'admission-log',
    env: 'PRESTOP_ADMISSION_LOG',
    default: 'grouped',
    description:
      'A line per admission (each), or pods answered from a kept plan grouped by plan, up to 50 per line within 1 s (grouped); every uid is logged either way',
  },
} as const satisfies Record<string, OptionSpec>;

export type OptionName = keyof typeof OPTIONS;
export type RawOptions = Record<OptionName, string>;

export class ConfigError extends Error {}

/** Reads flags (`--name value` or `--name=value`) over env vars over defaults. */
export function readRawOptions(argv: readonly string[], env: NodeJS.ProcessEnv): RawOptions {
  const byFlag = new Map<string, OptionName>(
    Object.entries(OPTIONS).map(([name, spec]) => [spec.flag, name as OptionName]),
  );
  const raw = Object.fromEntries(
    Object.entries(OPTIONS).map(([name, spec]) => [name, env[spec.env] ?? spec.default]),
  ) as RawOptions;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) throw new ConfigError(`unexpected argument ${JSON.stringify(arg)}`);
    const eq = arg.indexOf('=');
    const flag = arg.slice(2, eq === -1 ? undefined : eq);
    const name = byFlag.get(flag);
    if (name === undefined) throw new ConfigError(`unknown flag --${flag}`);
    let value: string | undefined;
    if (eq !== -1) value = arg.slice(eq + 1);
    else value = argv[++i];
    if (value === undefined) throw new ConfigError(`--${flag} needs a value`);
    raw[name] = value;
  }
  return raw;
}

export function splitList(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

function port(raw: RawOptions, name: 'port' | 'healthPort'): number {
  const text = raw[name];
  if (!/^\d+$/.test(text) || Number(text) > 65535) {
    throw new ConfigError(`--${OPTIONS[name].flag}: ${JSON.stringify(text)} is not a port`);
  }
  return Number(text);
}

function override(raw: RawOptions, name: 'sleepAction'): Override {
  const value = parseOverride(raw[name]);
  if (value === null)
    throw new ConfigError(
      `--${OPTIONS[name].flag}: expected auto, on or off, got ${JSON.stringify(raw[name])}`,
    );
  return value;
}

/** Settings defaults from config, with strict errors: config is the operator's, not the user's. */
export function settingsFromOptions(raw: RawOptions): Settings {
  const flagOf = (name: SettingName) => {
    const option = SETTING_OPTIONS[name];
    return option === undefined ? '' : OPTIONS[option].flag;
  };
  const layer = Object.fromEntries(
    Object.values(SETTING_OPTIONS).map((option) => [OPTIONS[option].flag, raw[option]]),
  );
  const parsed = parseLayer(layer, 'config', flagOf);
  const first = parsed.warnings[0];
  if (first !== undefined) {
    throw new ConfigError(
      `--${first.key}: bad value ${JSON.stringify(first.value)}: ${first.reason}`,
    );
  }
  return mergeSettings(BUILTIN_DEFAULTS, parsed.settings);
}

export interface ServerConfig {
  port: number;
  host: string;
  healthPort: number;
  tlsCertPath: string;
  tlsKeyPath: string;
  certPollMs: number;
  defaults: Settings;
  planner: PlannerConfig;
  kubeVersionOverride: string;
  capabilityOverrides: CapabilityOverrides;
  cluster: 'auto' | 'on' | 'off';
  kubeconfig: string;
  ownNamespace: string;
  logLevel: string;
  admissionLog: AdmissionLogMode;
  shutdownDelayMs: number;
}

export function buildConfig(raw: RawOptions): ServerConfig {
  const kubeVersion = raw.kubeVersion.trim();
  if (kubeVersion !== '' && parseKubeVersion(kubeVersion) === null) {
    throw new ConfigError(
      `--kube-version: ${JSON.stringify(kubeVersion)} is not a version like 1.33`,
    );
  }
  const cluster = parseOverride(raw.cluster);
  if (cluster === null) throw new ConfigError(`--cluster: expected auto, on or off`);
  const shutdownDelay = Number(raw.shutdownDelaySeconds);
  if (!Number.isFinite(shutdownDelay) || shutdownDelay < 0 || shutdownDelay > 300) {
    throw new ConfigError('--shutdown-delay-seconds: expected a number of seconds, 0..300');
  }
  const admissionLog = ADMISSION_LOG_MODES.find((mode) => mode === raw.admissionLog);
  if (admissionLog === undefined)
    throw new ConfigError(
      `--admission-log: expected ${ADMISSION_LOG_MODES.join(' or ')}, got ${JSON.stringify(raw.admissionLog)}`,
    );
  const certPoll = Number(raw.certPollSeconds);
  if (!Number.isFinite(certPoll) || certPoll <= 0)
    throw new ConfigError('--cert-poll-seconds: expected a positive number');
  return {
    port: port(raw, 'port'),
    host: raw.host,
    healthPort: port(raw, 'healthPort'),
    tlsCertPath: raw.tlsCert,
    tlsKeyPath: raw.tlsKey,
    certPollMs: certPoll * 1000,
    defaults: settingsFromOptions(raw),
    planner: {
      distrolessPatterns: splitList(raw.distrolessPatterns).map((p) => p.toLowerCase()),
      helperSidecars: splitList(raw.helperSidecars),
    },
    kubeVersionOverride: kubeVersion,
    capabilityOverrides: {
      sleepAction: override(raw, 'sleepAction'),
    },
    cluster,
    kubeconfig: raw.kubeconfig,
    ownNamespace: raw.ownNamespace,
    logLevel: raw.logLevel,
    admissionLog,
    shutdownDelayMs: shutdownDelay * 1000,
  };
}

/** Capabilities from config alone: the version given, or unknown. */
export function configuredCapabilities(
  config: Pick<ServerConfig, 'kubeVersionOverride' | 'capabilityOverrides'>,
  clusterVersion: string | null = null,
): Capabilities {
  const version = parseKubeVersion(
    config.kubeVersionOverride !== '' ? config.kubeVersionOverride : clusterVersion,
  );
  return capabilitiesFor(version, config.capabilityOverrides);
}

/**
 * Where the cluster's credentials come from, or null when the webhook runs
 * without one: --kubeconfig, the in-cluster service account, or (only with
 * --cluster on) the default kubeconfig.
 */
export function kubeconfigSource(
  config: Pick<ServerConfig, 'cluster' | 'kubeconfig'>,
  env: Readonly<Record<string, string | undefined>> = process.env,
): 'file' | 'in-cluster' | 'default' | null {
  if (config.cluster === 'off') return null;
  if (config.kubeconfig !== '') return 'file';
  if (env['KUBERNETES_SERVICE_HOST'] !== undefined) return 'in-cluster';
  return config.cluster === 'on' ? 'default' : null;
}
