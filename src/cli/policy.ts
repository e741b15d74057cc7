// `prestop-injector policy`: prints the MutatingAdmissionPolicy, its binding
// and its params ConfigMap as YAML, from serve's own settings (flags over
// environment variables over defaults).

import { stringify } from 'yaml';
import {
  NOT_EXPRESSED,
  POLICY_MIN_KUBE_MINOR,
  SLEEP_ACTION_MIN_KUBELET_MINOR,
  policyObjects,
  settingsProblem,
} from '../core/admission-policy.ts';
import { parseKubeVersion } from '../core/capabilities.ts';
import { SYSTEM_NAMESPACES } from '../webhook/admission.ts';
import { buildConfig, ConfigError, OPTIONS, readRawOptions, type OptionName } from './config.ts';

/** Where the params ConfigMap goes when --own-namespace (POD_NAMESPACE) is empty. */
export const DEFAULT_POLICY_NAMESPACE = 'prestop-injector';
const POLICY_NAME = 'prestop-injector';

/** serve's options the policy takes; the others are the server's: refused as flags, ignored as env. */
const POLICY_OPTIONS: ReadonlySet<OptionName> = new Set<OptionName>([
  'injectDefault',
  'mode',
  'delaySeconds',
  'drainTimeoutSeconds',
  'drainQuietSeconds',
  'sidecars',
  'distrolessPatterns',
  'helperSidecars',
  'ownNamespace',
  'kubeVersion',
  'sleepAction',
]);
const SERVER_ONLY = (Object.keys(OPTIONS) as OptionName[]).filter(
  (name) => !POLICY_OPTIONS.has(name),
);

export const POLICY_USAGE = `  prestop-injector policy [--flag value ...]
      Prints a MutatingAdmissionPolicy (Kubernetes 1.${POLICY_MIN_KUBE_MINOR}+), its binding and a ConfigMap
      of settings, as YAML for kubectl apply: the webhook's sleep-action injection with no server.
      Takes serve's settings flags and env vars (--inject-default, --delay-seconds, --sidecars,
      --helper-sidecars, --distroless-patterns, ...); --own-namespace (POD_NAMESPACE) holds the
      ConfigMap, default ${DEFAULT_POLICY_NAMESPACE}. It assumes every kubelet is 1.${SLEEP_ACTION_MIN_KUBELET_MINOR}+.
`;

function flagsGiven(argv: readonly string[]): Set<string> {
  return new Set(
    argv.filter((arg) => arg.startsWith('--')).map((arg) => arg.slice(2).split('=')[0]!),
  );
}

/** The YAML to apply. Throws ConfigError on settings the policy cannot carry. */
export function renderPolicy(argv: readonly string[], env: NodeJS.ProcessEnv): string {
  const given = flagsGiven(argv);
  for (const name of SERVER_ONLY) {
    if (given.has(OPTIONS[name].flag)) {
      throw new ConfigError(`--${OPTIONS[name].flag} is a server option; policy has no server`);
    }
  }
  const raw = readRawOptions(argv, env);
  for (const name of SERVER_ONLY) raw[name] = OPTIONS[name].default;
  const config = buildConfig(raw);
  const version = parseKubeVersion(raw.kubeVersion);
  if (version !== null && version.major === 1 && version.minor < POLICY_MIN_KUBE_MINOR) {
    throw new ConfigError(
      `--kube-version ${raw.kubeVersion}: MutatingAdmissionPolicy v1 needs Kubernetes 1.${POLICY_MIN_KUBE_MINOR} or newer; use the webhook (serve)`,
    );
  }
  if (config.capabilityOverrides.sleepAction === 'off') {
    throw new ConfigError(
      '--sleep-action off: the policy writes only the sleep action; use the webhook (serve)',
    );
  }
  const problem = settingsProblem(config.defaults, config.planner);
  if (problem !== null) throw new ConfigError(problem);
  const namespace = config.ownNamespace.trim() || DEFAULT_POLICY_NAMESPACE;
  const objects = policyObjects(config.defaults, config.planner, {
    name: POLICY_NAME,
    namespace,
    systemNamespaces: SYSTEM_NAMESPACES,
  });
  const header = [
    `# prestop-injector as a MutatingAdmissionPolicy (Kubernetes 1.${POLICY_MIN_KUBE_MINOR}+): no server.`,
    `# It assumes every kubelet is 1.${SLEEP_ACTION_MIN_KUBELET_MINOR} or newer (the preStop sleep action): install it only there.`,
    '# Left unchanged (use the webhook for them):',
    ...NOT_EXPRESSED.map((item) => `#   - ${item}`),
    `# The ConfigMap's namespace (${namespace}) must exist; it is never injected.`,
  ];
  return `${header.join('\n')}\n${objects.map((o) => stringify(o, { lineWidth: 0 })).join('---\n')}`;
}

export function runPolicy(argv: readonly string[]): number {
  if (argv.includes('-h') || argv.includes('--help')) {
    process.stdout.write(`Usage:\n${POLICY_USAGE}`);
    return 0;
  }
  process.stdout.write(renderPolicy(argv, process.env));
  return 0;
}
