// Server and CLI configuration: one table of options, each settable by flag
// or environment variable (flags win). The README's configuration table is
// checked against this table by a test.

import { readFileSync } from 'node:fs';
import type { ClusterConnection } from '../cluster/view.ts';
import {
  capabilitiesFor,
  parseKubeVersion,
  parseOverride,
  uniformVersions,
  type Capabilities,
  type CapabilityOverrides,
  type ClusterVersions,
  type Override,
} from '../core/capabilities.ts';
import type { PlannerConfig } from '../core/planner.ts';
import {
  BUILTIN_DEFAULTS,
  mergeSettings,
  parseLayer,
  type SettingName,
  type Settings,
} from '../core/policy.ts';

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
    description:
      'How often the certificate files are polled, besides file watching (with --tls-secret: the Secret)',
  },
  tlsSecret: {
    flag: 'tls-secret',
    env: 'PRESTOP_TLS_SECRET',
    default: '',
    description:
      'Secret in --own-namespace where the webhook keeps the CA and serving certificate it makes and renews itself (one writer, by a Lease of the same name); empty: serve --tls-cert and --tls-key',
  },
  tlsNames: {
    flag: 'tls-names',
    env: 'PRESTOP_TLS_NAMES',
    default: '',
    description:
      'With --tls-secret: comma-separated DNS names and IP addresses the serving certificate covers',
  },
  webhookConfiguration: {
    flag: 'webhook-configuration',
    env: 'PRESTOP_WEBHOOK_CONFIGURATION',
    default: '',
    description:
      'With --tls-secret: the MutatingWebhookConfiguration whose caBundle the webhook keeps to its CA',
  },
  certValidity: {
    flag: 'cert-validity',
    env: 'PRESTOP_CERT_VALIDITY',
    default: '8760h',
    description: 'With --tls-secret: lifetime of the serving certificate (h, m, s)',
  },
  certRenewBefore: {
    flag: 'cert-renew-before',
    env: 'PRESTOP_CERT_RENEW_BEFORE',
    default: '2160h',
    description:
      'With --tls-secret: the serving certificate is renewed this long before it expires',
  },
  caValidity: {
    flag: 'ca-validity',
    env: 'PRESTOP_CA_VALIDITY',
    default: '87600h',
    description:
      'With --tls-secret: lifetime of the CA, at least 3 x --cert-validity; a new CA is made when a third is left',
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
    description:
      'Comma-separated image substrings with no shell or sleep, besides the built-in ones (distroless, Chainguard, shell-less registry.k8s.io images)',
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
      'Watch the cluster (namespaces, nodes, version): auto (when --kubeconfig is set or the process runs in a pod), on or off',
  },
  kubeconfig: {
    flag: 'kubeconfig',
    env: 'KUBECONFIG',
    default: '',
    description:
      'Kubeconfig file; empty: the in-cluster service account, and with --cluster on also ~/.kube/config',
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
function settingsFromOptions(raw: RawOptions): Settings {
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

/** The version in package.json, read once. */
export const PACKAGE_VERSION = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  }
).version;

/** Run-time certificates (--tls-secret): what the webhook makes, renews and publishes. */
interface RuntimeCertificateConfig {
  secretName: string;
  webhookConfiguration: string;
  names: string[];
  certValidityMs: number;
  certRenewBeforeMs: number;
  caValidityMs: number;
}

/** A duration such as 8760h, 90m, 1h30m or 45s, in milliseconds; null when it is not one. */
export function parseDuration(text: string): number | null {
  const trimmed = text.trim();
  if (!/^(\d+(\.\d+)?[hms])+$/.test(trimmed)) return null;
  const unit = { h: 3_600_000, m: 60_000, s: 1_000 } as const;
  let ms = 0;
  for (const [, amount, u] of trimmed.matchAll(/(\d+(?:\.\d+)?)([hms])/g))
    ms += Number(amount) * unit[u as keyof typeof unit];
  return Math.round(ms);
}

function runtimeCertificates(raw: RawOptions): RuntimeCertificateConfig | null {
  const secretName = raw.tlsSecret.trim();
  if (secretName === '') return null;
  const needs = (name: OptionName, what: string) => {
    if (raw[name].trim() === '')
      throw new ConfigError(`--${OPTIONS.tlsSecret.flag} needs --${OPTIONS[name].flag}: ${what}`);
  };
  needs('ownNamespace', 'the namespace of the Secret');
  needs('webhookConfiguration', 'where the CA bundle goes');
  needs('tlsNames', 'the names the serving certificate covers');
  if (raw.cluster.trim() === 'off')
    throw new ConfigError(
      `--${OPTIONS.tlsSecret.flag} needs the cluster: --cluster off cannot have it`,
    );
  const duration = (name: 'certValidity' | 'certRenewBefore' | 'caValidity') => {
    const ms = parseDuration(raw[name]);
    if (ms === null || ms <= 0)
      throw new ConfigError(
        `--${OPTIONS[name].flag}: ${JSON.stringify(raw[name])} is not a duration like 8760h, 30m or 90s`,
      );
    return ms;
  };
  const certValidityMs = duration('certValidity');
  const certRenewBeforeMs = duration('certRenewBefore');
  const caValidityMs = duration('caValidity');
  if (certValidityMs < 30_000)
    throw new ConfigError(`--${OPTIONS.certValidity.flag}: at least 30s`);
  if (certRenewBeforeMs >= certValidityMs)
    throw new ConfigError(
      `--${OPTIONS.certRenewBefore.flag} (${raw.certRenewBefore}) must be less than --${OPTIONS.certValidity.flag} (${raw.certValidity})`,
    );
  if (caValidityMs < 3 * certValidityMs)
    throw new ConfigError(
      `--${OPTIONS.caValidity.flag} (${raw.caValidity}) must be at least 3 x --${OPTIONS.certValidity.flag} (${raw.certValidity}): a CA is replaced when a third of it is left`,
    );
  return {
    secretName,
    webhookConfiguration: raw.webhookConfiguration.trim(),
    names: splitList(raw.tlsNames),
    certValidityMs,
    certRenewBeforeMs,
    caValidityMs,
  };
}

export interface ServerConfig extends ClusterConnection {
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
  ownNamespace: string;
  logLevel: string;
  shutdownDelayMs: number;
  /** null: the serving pair comes from --tls-cert and --tls-key. */
  runtimeCertificates: RuntimeCertificateConfig | null;
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
    shutdownDelayMs: shutdownDelay * 1000,
    runtimeCertificates: runtimeCertificates(raw),
  };
}

/**
 * Capabilities from config and what the cluster says: --kube-version, when
 * given, is the API server's and the oldest kubelet's; else the cluster's
 * versions, or unknown.
 */
export function configuredCapabilities(
  config: Pick<ServerConfig, 'kubeVersionOverride' | 'capabilityOverrides'>,
  cluster: ClusterVersions = { server: null, oldestKubelet: null },
): Capabilities {
  const versions =
    config.kubeVersionOverride !== ''
      ? uniformVersions(parseKubeVersion(config.kubeVersionOverride))
      : cluster;
  return capabilitiesFor(versions, config.capabilityOverrides);
}
