// The webhook's common case as a MutatingAdmissionPolicy (CEL run by the API
// server itself, admissionregistration.k8s.io/v1, Kubernetes 1.36+): no
// server, no certificates, no network hop. Pure: settings and the planner's
// tables in, Kubernetes objects out.
//
// The CEL is generated from the same tables the planner and the annotation
// parsers use (keys, bounds, words, defaults, container names, timings), and
// it is static: the operator's settings reach it through a ConfigMap (the
// policy's params), so the chart can ship it verbatim. It computes exactly
// the webhook's answer (undo of an earlier pass, then the plan, then the
// status record) or leaves the pod as it came: one JSON patch, all or
// nothing. See docs/adr/0012-mutating-admission-policy.md.

import { Annotation, ForeignAnnotation } from './annotations.ts';
import {
  DEFAULT_GRACE_SECONDS,
  EXIT_ON_ZERO_ENV,
  EXIT_ON_ZERO_MIN_ISTIO_MINOR,
  MESH_MIN_DELAY_SECONDS,
  type PlannerConfig,
} from './planner.ts';
import {
  BUILTIN_DEFAULTS,
  SETTING_SPECS,
  type SettingName,
  type Settings,
  type SettingSyntax,
} from './policy.ts';
import {
  ISTIO_PROXY,
  ISTIO_PROXY_CONFIG_ENV,
  ISTIO_TERMINATION_DRAIN_SECONDS,
  ISTIO_UID,
  LINKERD_PROXY,
  SHELL_LESS_IMAGE_PATTERNS,
  SIDECAR_SHUTDOWN_SECONDS,
} from './sidecars.ts';
import type { HookKind } from './status.ts';

const POLICY_API_VERSION = 'admissionregistration.k8s.io/v1';
/** MutatingAdmissionPolicy is GA (admissionregistration.k8s.io/v1) from this minor. */
export const POLICY_MIN_KUBE_MINOR = 36;
/** The sleep action works on every kubelet from this minor (KEP-3960, beta and on). */
export const SLEEP_ACTION_MIN_KUBELET_MINOR = 30;

/** The ConfigMap keys the policy reads its settings from: serve's flag names. */
export const PARAM_KEYS = {
  inject: 'inject-default',
  mode: 'mode',
  delaySeconds: 'delay-seconds',
  drainTimeoutSeconds: 'drain-timeout-seconds',
  drainQuietSeconds: 'drain-quiet-seconds',
  sidecars: 'sidecars',
  distrolessPatterns: 'distroless-patterns',
  helperSidecars: 'helper-sidecars',
} as const satisfies Partial<Record<SettingName | keyof PlannerConfig, string>>;

type ConfiguredSetting = Exclude<keyof typeof PARAM_KEYS, keyof PlannerConfig>;
const CONFIGURED_SETTINGS = Object.keys(PARAM_KEYS).filter(
  (name): name is ConfiguredSetting => name in SETTING_SPECS,
);

/** What the policy cannot do: said in its description, the README and the ADR. */
export const NOT_EXPRESSED: readonly string[] = [
  'drain mode (a shell script)',
  "the Istio sidecar hold that polls sockets (a classic istio-proxy with a shell, its own uid, not 0 and not an app container's)",
  'a classic istio-proxy whose proxy config sets terminationDrainDuration',
  'clusters without the sleep action: it assumes every kubelet is 1.30 or newer, so install it only where that holds',
  'an earlier pass in drain mode or with exec hooks, or a status annotation it did not write',
];

// ------------------------------------------------------------ CEL helpers

/** A CEL string literal (JSON's escapes are CEL's too). */
function str(text: string): string {
  return JSON.stringify(text);
}

function list(items: readonly string[]): string {
  return `[${items.map(str).join(', ')}]`;
}

function variable(name: string): string {
  return `variables.${name}`;
}

/**
 * ECMAScript's white space and line terminators: what String.trim removes
 * and \s matches. CEL's trim() and RE2's \s differ (U+FEFF, U+0085), so the
 * parsers' trim is written out as this class.
 */
export const JS_SPACE_CODE_POINTS: readonly (number | readonly [number, number])[] = [
  0x09,
  0x0a,
  0x0b,
  0x0c,
  0x0d,
  0x20,
  0xa0,
  0x1680,
  [0x2000, 0x200a],
  0x2028,
  0x2029,
  0x202f,
  0x205f,
  0x3000,
  0xfeff,
];

const hex = (code: number) => `\\x{${code.toString(16).toUpperCase()}}`;
const SPACE = JS_SPACE_CODE_POINTS.map((c) =>
  typeof c === 'number' ? hex(c) : `${hex(c[0])}-${hex(c[1])}`,
).join('');
const SPACE_CLASS = `[${SPACE}]`;
const NON_SPACE_CLASS = `[^${SPACE}]`;

/** `text` trimmed as String.trim does: from its first to its last non-space. */
function trimmed(text: string): string {
  return `${text}.find(${str(`(?s)${NON_SPACE_CLASS}(.*${NON_SPACE_CLASS})?`)})`;
}

/** Integers of up to this many digits stay exact in JavaScript and in CEL sums. */
const EXACT_DIGITS = 15;
const EXACT_LIMIT = 10 ** EXACT_DIGITS - 1;

/**
 * CEL for one setting's parser, from the syntax the table gives it. `text`
 * is the value already prepared by `prepare` (trimmed, and lowered for
 * words), so that a value is trimmed once however often it is tested.
 */
interface Parser {
  prepare(raw: string): string;
  valid(text: string): string;
  value(text: string): string;
}

function parserFor(syntax: SettingSyntax): Parser {
  switch (syntax.kind) {
    case 'words': {
      const words = Object.keys(syntax.words);
      // lowerAscii() equals toLowerCase() on these words only while no
      // non-ASCII letter lowers into them: U+212A (Kelvin) lowers to "k".
      if (words.some((w) => !/^[a-jl-z]+$/.test(w))) {
        throw new Error(`words ${words.join(', ')}: CEL's lowerAscii() cannot match them exactly`);
      }
      const values = Object.values(syntax.words);
      const booleans = values.every((v) => typeof v === 'boolean');
      // Otherwise each word is its own value (the mode).
      if (!booleans && words.some((w) => syntax.words[w] !== w)) {
        throw new Error('a words setting must map each word to itself or to a boolean');
      }
      return {
        prepare: (raw) => `${trimmed(raw)}.lowerAscii()`,
        valid: (text) => `${text} in ${list(words)}`,
        value: (text) =>
          booleans ? `${text} in ${list(words.filter((w) => syntax.words[w] === true))}` : text,
      };
    }
    case 'integer': {
      const digits = String(syntax.max).length;
      return {
        prepare: trimmed,
        // Leading zeros are fine in Number() and in CEL's int().
        valid: (text) =>
          `(${text}.matches(${str(`^0*[0-9]{1,${digits}}$`)}) && ` +
          `int(${text}) >= ${syntax.min} && int(${text}) <= ${syntax.max})`,
        value: (text) => `int(${text})`,
      };
    }
    case 'names':
      return {
        // As parseNameList: split, trim each, drop the empty ones.
        prepare: (raw) => `${raw}.split(",").map(p, ${trimmed('p')}).filter(p, p != "")`,
        valid: (names) =>
          `(${names}.size() > 0 && ${names}.all(n, ` +
          `n.matches(${str(syntax.pattern.source)}) && n.size() <= ${syntax.maxLength}))`,
        value: (names) => names,
      };
  }
}

/** A list of integers: each element typed int, as CEL's homogeneous literals want. */
function ints(...items: string[]): string {
  return `[${items.map((item) => `int(${item})`).join(', ')}]`;
}

function celLiteral(value: unknown): string {
  if (typeof value === 'string') return str(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  throw new Error(`no CEL literal for ${JSON.stringify(value)}`);
}

// ------------------------------------------------------------ the CEL program

const STATUS = Annotation.status;
/** The status record's names: DNS labels, so its JSON needs no escapes. */
const NAME_JSON = '"[a-z0-9]([-a-z0-9]*[a-z0-9])?"';
const NUMBER_JSON = `(0|[1-9][0-9]{0,${EXACT_DIGITS - 1}})`;
const SLEEP_HOOKS: readonly HookKind[] = ['sleep-action', 'kept', 'none'];

const SLEEP_SECTION = `,"sleep":\\{${NAME_JSON}:${NUMBER_JSON}(,${NAME_JSON}:${NUMBER_JSON})*\\}`;
const ENV_SECTION = `,"env":\\{${NAME_JSON}:\\["${EXIT_ON_ZERO_ENV}"\\](,${NAME_JSON}:\\["${EXIT_ON_ZERO_ENV}"\\])*\\}`;
const LIFECYCLE_SECTION = `,"lc":\\[${NAME_JSON}(,${NAME_JSON})*\\]`;
const HOOK_ENTRY = `${NAME_JSON}:"(${SLEEP_HOOKS.join('|')})"`;

/**
 * A status record as writeRecorded serializes a sleep-mode pass with no exec
 * hook; any other record is left to the webhook. Older versions wrote the
 * last three sections in the order first needed: any order is read.
 */
const CANONICAL_STATUS =
  '^\\{"v":1,"mode":"sleep",' +
  `"delaySeconds":${NUMBER_JSON},` +
  `"grace":\\{"from":(null|${NUMBER_JSON}),"to":${NUMBER_JSON}\\},` +
  `"hooks":\\{(${HOOK_ENTRY}(,${HOOK_ENTRY})*)?\\},` +
  '"fp":\\{\\}' +
  `(${SLEEP_SECTION}|${ENV_SECTION}|${LIFECYCLE_SECTION})*` +
  '\\}$';
/** Each of the last three sections at most once (JSON.parse keeps the last). */
const SECTION_STARTS = [',"sleep":\\{', ',"env":\\{', ',"lc":\\['];

/** The entries of one of the status record's maps or lists, as text. */
function recordEntries(key: string, open: string, close: string): string {
  const found = `${variable('statusText')}.find(${str(`"${key}":\\${open}[^\\${close}]*\\${close}`)})`;
  const prefix = `"${key}":${open}`.length;
  return (
    `(${found} == "" || ${found}.size() == ${prefix + 1} ? [] : ` +
    `${found}.substring(${prefix}, ${found}.size() - 1).split(","))`
  );
}

/** Quoted name of an entry such as "app":10 or "app". */
const entryName = (entry: string) => `${entry}.split('"')[1]`;

/** A shell (sh, bash, dash) as fixedHookSeconds recognizes one. */
const SHELL = '(^|/)(ba|da)?sh$';
/** `sleep N` as the shell's script: trimmed and split on white space, two words. */
const SHELL_SLEEP = `^${SPACE_CLASS}*(${NON_SPACE_CLASS}*/)?sleep${SPACE_CLASS}+[0-9]+${SPACE_CLASS}*$`;
const SLEEP_WORD = `^(${NON_SPACE_CLASS}*/)?sleep$`;
const EXACT_NUMBER = `^0*[0-9]{1,${EXACT_DIGITS}}$`;

/**
 * The CEL of fixedHookSeconds over a preStop `h` (present): its seconds, -1
 * when its length is not fixed, -2 when it is fixed but too long to be exact.
 */
function fixedSeconds(h: string): string {
  const command = `${h}.exec.command`;
  const shellNumber = `${command}[2].find(${str(`[0-9]+${SPACE_CLASS}*$`)}).find("[0-9]+")`;
  const exactOr = (digits: string) =>
    `(${digits}.matches(${str(EXACT_NUMBER)}) ? int(${digits}) : -2)`;
  return (
    `(has(${h}.sleep) && has(${h}.sleep.seconds) ? ${h}.sleep.seconds : ` +
    `!has(${h}.exec) || !has(${command}) ? -1 : ` +
    `${command}.size() == 3 && ${command}[0].matches(${str(SHELL)}) && ${command}[1] == "-c" && ` +
    `${command}[2].matches(${str(SHELL_SLEEP)}) ? ${exactOr(shellNumber)} : ` +
    `${command}.size() == 2 && ${command}[0].matches(${str(SLEEP_WORD)}) && ` +
    `${command}[1].matches("^[0-9]+$") ? ${exactOr(`${command}[1]`)} : -1)`
  );
}

interface Variable {
  name: string;
  expression: string;
}

/** The policy's variables, in order: each may use the ones before it. */
function policyVariables(): Variable[] {
  const v = variable;
  const vars: Variable[] = [];
  const define = (name: string, expression: string) => vars.push({ name, expression });
  const containers = 'object.spec.containers';
  const at = (i: string) => `${containers}[${i}]`;

  // Settings: pod annotation over namespace annotation over params over the
  // built-in default; an invalid annotation is ignored, as parseLayer does.
  define('podAnnotations', 'object.metadata.?annotations.orValue({})');
  define(
    'namespaceAnnotations',
    'namespaceObject == null ? {} : namespaceObject.metadata.?annotations.orValue({})',
  );
  define('config', 'params == null ? {} : params.?data.orValue({})');
  // Each value prepared once: an absent one reads as "", which no parser accepts.
  const prepared = (name: SettingName, layer: 'Pod' | 'Namespace' | 'Params') => {
    const variableName = `${name}At${layer}`;
    const key =
      layer === 'Params' ? PARAM_KEYS[name as ConfiguredSetting] : SETTING_SPECS[name].key;
    const map = v(
      layer === 'Pod'
        ? 'podAnnotations'
        : layer === 'Namespace'
          ? 'namespaceAnnotations'
          : 'config',
    );
    if (!vars.some((each) => each.name === variableName)) {
      define(
        variableName,
        parserFor(SETTING_SPECS[name].syntax).prepare(`${map}[?${str(key)}].orValue("")`),
      );
    }
    return v(variableName);
  };
  const annotated = (name: SettingName, otherwise: string) => {
    const parser = parserFor(SETTING_SPECS[name].syntax);
    const layer = (text: string, rest: string) =>
      `(${parser.valid(text)} ? ${parser.value(text)} : ${rest})`;
    return layer(prepared(name, 'Pod'), layer(prepared(name, 'Namespace'), otherwise));
  };
  const configured = (name: ConfiguredSetting) =>
    `(${str(PARAM_KEYS[name])} in ${v('config')} ? ` +
    `${parserFor(SETTING_SPECS[name].syntax).value(prepared(name, 'Params'))} : ${celLiteral(BUILTIN_DEFAULTS[name])})`;
  const listParam = (key: string) =>
    `${v('config')}[?${str(key)}].orValue("").split(",").map(p, ${trimmed('p')}).filter(p, p != "")`;
  // Invalid params make serve refuse to start; the policy then touches nothing.
  define(
    'paramsValid',
    [
      ...CONFIGURED_SETTINGS.map(
        (name) =>
          `(!(${str(PARAM_KEYS[name])} in ${v('config')}) || ` +
          `${parserFor(SETTING_SPECS[name].syntax).valid(prepared(name, 'Params'))})`,
      ),
      // Patterns are matched after lowerAscii(), toLowerCase() in the webhook.
      `${listParam(PARAM_KEYS.distrolessPatterns)}.all(p, p.matches("^[\\x00-\\x7F]*$"))`,
    ].join(' && '),
  );
  for (const name of ['inject', 'mode', 'delaySeconds', 'sidecars'] as const) {
    define(name, annotated(name, configured(name)));
  }
  {
    const parser = parserFor(SETTING_SPECS.containers.syntax);
    define(
      'containersChosen',
      `${parser.valid(prepared('containers', 'Pod'))} || ${parser.valid(prepared('containers', 'Namespace'))}`,
    );
  }
  define('containersList', annotated('containers', '[]'));
  {
    const parser = parserFor(SETTING_SPECS.inject.syntax);
    const atPod = prepared('inject', 'Pod');
    define('podOptIn', `${parser.valid(atPod)} && ${parser.value(atPod)}`);
  }
  define(
    'distrolessPatterns',
    `${list(SHELL_LESS_IMAGE_PATTERNS)} + ${listParam(PARAM_KEYS.distrolessPatterns)}.map(p, p.lowerAscii())`,
  );
  define('helperSidecars', listParam(PARAM_KEYS.helperSidecars));

  // An earlier pass (this policy's or the webhook's), read from its record.
  define('statusText', `${v('podAnnotations')}[?${str(STATUS)}].orValue("")`);
  define('hasStatus', `${str(STATUS)} in ${v('podAnnotations')}`);
  define(
    'statusCanonical',
    `${v('statusText')}.matches(${str(CANONICAL_STATUS)}) && ` +
      SECTION_STARTS.map((start) => `${v('statusText')}.findAll(${str(start)}).size() <= 1`).join(
        ' && ',
      ),
  );
  define('recordedHooks', `${recordEntries('hooks', '{', '}')}.map(e, ${entryName('e')})`);
  define('recordedSleeps', `${recordEntries('sleep', '{', '}')}.map(e, e.replace('"', ""))`);
  // A name twice in the sleep record: JSON.parse keeps the last; left to the webhook.
  define(
    'recordedSleepsUnique',
    `${v('recordedSleeps')}.all(e, ${v('recordedSleeps')}.filter(f, f.split(":")[0] == e.split(":")[0]).size() == 1)`,
  );
  define('recordedEnv', `${recordEntries('env', '{', '}')}.map(e, ${entryName('e')})`);
  define('recordedLifecycles', `${recordEntries('lc', '[', ']')}.map(e, ${entryName('e')})`);
  define(
    'recordedGraceTo',
    `${v('statusCanonical')} ? int(${v('statusText')}.find('"to":[0-9]+').substring(5)) : -1`,
  );
  define(
    'recordedGraceFrom',
    `${v('statusCanonical')} ? ${v('statusText')}.find('"from":(null|[0-9]+)').substring(7) : "null"`,
  );
  define('initNames', 'object.spec.?initContainers.orValue([]).map(c, c.name)');
  // The undo looks containers up by name, init ones too: left to the webhook.
  define(
    'recordNamesInit',
    `(${v('recordedHooks')} + ${v('recordedEnv')}).exists(n, n in ${v('initNames')})`,
  );

  // The pod with the earlier pass undone (undoRecorded), per regular container.
  define('indices', `${containers}.transformList(i, c, i)`);
  const preStop = (c: string) => `${c}.lifecycle.preStop`;
  define(
    'written',
    `${containers}.map(c, ${v('statusCanonical')} && c.name in ${v('recordedHooks')} && ` +
      `has(c.lifecycle) && has(${preStop('c')}) && ${preStop('c')}.size() == 1 && ` +
      `has(${preStop('c')}.sleep) && ${preStop('c')}.sleep.size() == 1 && ` +
      `has(${preStop('c')}.sleep.seconds) && ` +
      `c.name + ":" + string(${preStop('c')}.sleep.seconds) in ${v('recordedSleeps')})`,
  );
  define(
    'lifecycleDropped',
    `${containers}.transformList(i, c, ${v('written')}[i] && c.name in ${v('recordedLifecycles')} && c.lifecycle.size() == 1)`,
  );
  define(
    'keepsPreStop',
    `${containers}.transformList(i, c, has(c.lifecycle) && has(${preStop('c')}) && !${v('written')}[i])`,
  );
  define(
    'envUndone',
    `${containers}.map(c, ${v('statusCanonical')} && c.name in ${v('recordedEnv')} ? ` +
      `c.?env.orValue([]).filter(e, !(e.name == ${str(EXIT_ON_ZERO_ENV)} && e.?value.orValue("") == "true")) : ` +
      'c.?env.orValue([]))',
  );
  define('graceReceived', 'object.spec.?terminationGracePeriodSeconds.orValue(-1)');
  // -1: unset (the kubelet's default applies).
  define(
    'graceUndone',
    `${v('statusCanonical')} && ${v('graceReceived')} == ${v('recordedGraceTo')} ? ` +
      `(${v('recordedGraceFrom')} == "null" ? -1 : int(${v('recordedGraceFrom')})) : ${v('graceReceived')}`,
  );
  define(
    'originalGrace',
    `${v('graceUndone')} == -1 ? ${DEFAULT_GRACE_SECONDS} : ${v('graceUndone')}`,
  );

  // skipReason, on the undone pod.
  define(
    'skipped',
    `!${v('inject')} || object.spec.?restartPolicy.orValue("Always") in ["OnFailure", "Never"] || ` +
      `(${v('graceUndone')} == 0 && !${v('podOptIn')})`,
  );

  // findSidecars and sortContainers: "" is an app container.
  const kindOf = (c: string, regular: boolean) =>
    `(${c}.name == ${str(ISTIO_PROXY)} ? ${regular ? `(${containers}.size() > 1 ? "istio" : "")` : '"istio"'} : ` +
    `${c}.name == ${str(LINKERD_PROXY)} ? "linkerd" : ` +
    `${c}.name in ${v('helperSidecars')} ? "helper" : "")`;
  define('kinds', `${containers}.map(c, ${kindOf('c', true)})`);
  define(
    'nativeKinds',
    `object.spec.?initContainers.orValue([]).filter(c, c.?restartPolicy.orValue("") == "Always").map(c, ${kindOf('c', false)})`,
  );
  define('managed', `${v('sidecars')} && !object.spec.?hostNetwork.orValue(false)`);
  const mesh = (k: string) => `(${k} == "istio" || ${k} == "linkerd")`;
  define(
    'meshProxies',
    `${v('managed')} && (${v('kinds')}.exists(k, ${mesh('k')}) || ${v('nativeKinds')}.exists(k, ${mesh('k')}))`,
  );
  define(
    'isTarget',
    `${containers}.transformList(i, c, ${v('kinds')}[i] == "" && (!${v('containersChosen')} || c.name in ${v('containersList')}))`,
  );
  // Classic sidecars whose stop is ordered after the app's.
  define('isHeld', `${v('indices')}.map(i, ${v('managed')} && ${v('kinds')}[i] != "")`);
  define(
    'delay',
    `${v('meshProxies')} ? ${ints(String(MESH_MIN_DELAY_SECONDS), v('delaySeconds'))}.max() : ${v('delaySeconds')}`,
  );
  define(
    'fixedSeconds',
    `${containers}.transformList(i, c, ${v('keepsPreStop')}[i] ? ${fixedSeconds(preStop('c'))} : -1)`,
  );
  define(
    'appBudget',
    `${v('delay')} > 0 && ${v('indices')}.exists(i, ${v('isTarget')}[i] && !${v('keepsPreStop')}[i]) ? ${v('delay')} : 0`,
  );
  // Classic mesh proxies that keep a fixed preStop of their own: gone then, plus their drain.
  define(
    'proxyGoneAt',
    `${v('indices')}.filter(i, ${v('isHeld')}[i] && ${mesh(`${v('kinds')}[i]`)} && ${v('keepsPreStop')}[i] && ${v('fixedSeconds')}[i] >= 0)` +
      `.map(i, ${v('fixedSeconds')}[i] + (${v('kinds')}[i] == "istio" ? ${ISTIO_TERMINATION_DRAIN_SECONDS} : 0))`,
  );
  // No such proxy: the window has no end, and the app keeps its whole grace period.
  define(
    'afterSigterm',
    `${v('proxyGoneAt')}.size() == 0 ? ${v('originalGrace')} : ` +
      `${ints('0', `${ints(v('originalGrace'), `${ints(v('originalGrace'), `${v('proxyGoneAt')}.min()`)}.max() - ${v('appBudget')}`)}.min()`)}.max()`,
  );
  define(
    'holdMinParts',
    `${ints(String(MESH_MIN_DELAY_SECONDS), v('delay'))} + ${v('indices')}.filter(i, ${v('kinds')}[i] == "" && ${v('fixedSeconds')}[i] >= 0).map(i, ${v('fixedSeconds')}[i])`,
  );
  define('holdMinSeconds', `${v('holdMinParts')}.max()`);
  define(
    'holdMaxSeconds',
    `${ints(v('holdMinSeconds'), `${v('appBudget')} + ${v('afterSigterm')}`)}.max()`,
  );
  // runAsUserOf, -1 when unset.
  define(
    'uids',
    `${containers}.map(c, c.?securityContext.?runAsUser.orValue(object.spec.?securityContext.?runAsUser.orValue(-1)))`,
  );
  define(
    'appUids',
    `${v('indices')}.filter(i, ${v('isTarget')}[i] && ${v('uids')}[i] != -1).map(i, ${v('uids')}[i])`,
  );
  // Istio's classic sidecars: rare, so everything Istio-only looks at them alone.
  define(
    'istioHeld',
    `${v('indices')}.filter(i, ${v('isHeld')}[i] && ${v('kinds')}[i] == "istio" && !${v('keepsPreStop')}[i])`,
  );
  const distroless = (i: string) =>
    `${v('distrolessPatterns')}.exists(p, p != "" && ${at(i)}.?image.orValue("").lowerAscii().contains(p))`;
  define('istioDistroless', `${v('istioHeld')}.filter(i, ${distroless('i')})`);
  const istioUid = (i: string) => `(${v('uids')}[${i}] == -1 ? ${ISTIO_UID} : ${v('uids')}[${i}])`;
  define(
    'pollsSockets',
    `${v('istioHeld')}.exists(i, !(i in ${v('istioDistroless')}) && ${istioUid('i')} != 0 && !(${istioUid('i')} in ${v('appUids')}))`,
  );
  // The drain read from Istio's proxy config (YAML or JSON) is not parsed
  // here: a config that could set it is left to the webhook.
  const setsDrain = (text: string) =>
    `(${text}.contains("terminationDrainDuration") || ${text}.contains("\\\\"))`;
  define(
    'istioConfigUnread',
    `${v('indices')}.exists(i, ${v('isHeld')}[i] && ${v('kinds')}[i] == "istio" && (` +
      `${at('i')}.?env.orValue([]).exists(e, e.name == ${str(ISTIO_PROXY_CONFIG_ENV)} && ${setsDrain('e.?value.orValue("")')}) || ` +
      `${setsDrain(`${v('podAnnotations')}[?${str(ForeignAnnotation.istioProxyConfig)}].orValue("")`)}))`,
  );
  // Image names are matched after lowerAscii(): non-ASCII ones go to the webhook.
  define(
    'istioImageUnread',
    `${v('istioHeld')}.exists(i, !${at('i')}.?image.orValue("").matches("^[\\\\x00-\\\\x7F]*$"))`,
  );
  define(
    'holdSeconds',
    `${v('indices')}.map(i, !${v('isHeld')}[i] || ${v('keepsPreStop')}[i] ? 0 : ` +
      `i in ${v('istioDistroless')} ? ${v('holdMinSeconds')} : ${v('holdMaxSeconds')})`,
  );
  // The tag's minor below EXIT_ON_ZERO_MIN_ISTIO_MINOR: Istio 1.0 to 1.11.
  const olderMinors = Array.from({ length: EXIT_ON_ZERO_MIN_ISTIO_MINOR }, (_, n) => n).join('|');
  const withoutDigest = (i: string) => `${at(i)}.?image.orValue("").split("@")[0]`;
  const tag = (i: string) =>
    `(${withoutDigest(i)}.indexOf(":", ${withoutDigest(i)}.lastIndexOf("/") + 1) == -1 ? "" : ` +
    `${withoutDigest(i)}.substring(${withoutDigest(i)}.indexOf(":", ${withoutDigest(i)}.lastIndexOf("/") + 1) + 1))`;
  // Distroless Istio proxies get EXIT_ON_ZERO_ACTIVE_CONNECTIONS, unless they have it.
  define(
    'exitEnv',
    `${v('istioDistroless')}.filter(i, ` +
      `!${tag('i')}.matches(${str(`^1\\.0*(${olderMinors})([^0-9]|$)`)}) && ` +
      `!${v('envUndone')}[i].exists(e, e.name == ${str(EXIT_ON_ZERO_ENV)}))`,
  );
  define('holdsAny', `${v('indices')}.exists(i, ${v('isHeld')}[i] && !${v('keepsPreStop')}[i])`);
  define(
    'graceTo',
    `(${ints(v('originalGrace'), `${v('afterSigterm')} + ${v('appBudget')} + (${v('holdsAny')} ? ${SIDECAR_SHUTDOWN_SECONDS} : 0)`)} + ` +
      `${v('indices')}.filter(i, ${v('isHeld')}[i] && !${v('keepsPreStop')}[i]).map(i, ${v('holdSeconds')}[i] + ${SIDECAR_SHUTDOWN_SECONDS})).max()`,
  );
  define('planning', `!${v('skipped')} && (${v('appBudget')} > 0 || ${v('holdsAny')})`);
  define(
    'planned',
    `${v('indices')}.map(i, !${v('planning')} ? 0 : ${v('isTarget')}[i] && !${v('keepsPreStop')}[i] ? ${v('appBudget')} : ${v('holdSeconds')}[i])`,
  );
  define(
    'numbersExact',
    `${v('graceReceived')} <= ${EXACT_LIMIT} && !${v('fixedSeconds')}.exists(s, s == -2)`,
  );
  define(
    'expressible',
    `${v('paramsValid')} && (!${v('hasStatus')} || (${v('statusCanonical')} && ${v('recordedSleepsUnique')} && !${v('recordNamesInit')})) && ` +
      `(${v('skipped')} || (${v('mode')} == "sleep" && !${v('pollsSockets')} && !${v('istioConfigUnread')} && ` +
      `!${v('istioImageUnread')} && ${v('numbersExact')} && ` +
      // JSON.stringify puts integer-like keys first: such names go to the webhook.
      `!${containers}.exists(c, c.name.matches("^[0-9]+$"))))`,
  );

  // The status record, as writeRecorded writes it: apps, then held sidecars.
  define(
    'decisionOrder',
    `${v('indices')}.filter(i, ${v('isTarget')}[i]) + ${v('indices')}.filter(i, ${v('isHeld')}[i])`,
  );
  const nameJson = (i: string) => `'"' + ${at(i)}.name + '"'`;
  const hookOf = (i: string) =>
    `(${v('keepsPreStop')}[${i}] ? "kept" : ${v('planned')}[${i}] > 0 ? "sleep-action" : "none")`;
  const entries = (filter: string, entry: string) =>
    `${v('decisionOrder')}.filter(i, ${filter}).map(i, ${entry}).join(",")`;
  const section = (text: string, key: string, open: string, close: string) =>
    `(${text} == "" ? "" : ',"${key}":${open}' + ${text} + '${close}')`;
  define(
    'sleepEntries',
    entries(`${v('planned')}[i] > 0`, `${nameJson('i')} + ":" + string(${v('planned')}[i])`),
  );
  define(
    'envEntries',
    entries(`i in ${v('exitEnv')}`, `${nameJson('i')} + ':["${EXIT_ON_ZERO_ENV}"]'`),
  );
  define(
    'lifecycleEntries',
    entries(
      `${v('planned')}[i] > 0 && (!has(${at('i')}.lifecycle) || ${v('lifecycleDropped')}[i])`,
      nameJson('i'),
    ),
  );
  define(
    'statusJson',
    `'{"v":1,"mode":"sleep","delaySeconds":' + string(${v('delay')}) + ` +
      `',"grace":{"from":' + (${v('graceUndone')} == -1 ? "null" : string(${v('graceUndone')})) + ` +
      `',"to":' + string(${v('graceTo')}) + '},"hooks":{' + ` +
      `${entries('true', `${nameJson('i')} + ":" + '"' + ${hookOf('i')} + '"'`)} + '},"fp":{}' + ` +
      `${section(v('sleepEntries'), 'sleep', '{', '}')} + ${section(v('envEntries'), 'env', '{', '}')} + ` +
      `${section(v('lifecycleEntries'), 'lc', '[', ']')} + "}"`,
  );
  return vars;
}

/** The one JSON patch: from the pod received to the webhook's answer, or nothing. */
function patchExpression(): string {
  const v = variable;
  const path = (i: string, rest: string) => `"/spec/containers/" + string(${i}) + "${rest}"`;
  const sleepValue = (i: string) => `{"sleep": {"seconds": ${v('planned')}[${i}]}}`;
  const envFinal = (i: string) =>
    `(${v('envUndone')}[${i}] + (${v('planning')} && ${i} in ${v('exitEnv')} ? [{"name": ${str(EXIT_ON_ZERO_ENV)}, "value": "true"}] : []))`;
  const envReceived = (i: string) => `object.spec.containers[${i}].?env.orValue([])`;
  const graceFinal = `(${v('planning')} ? ${v('graceTo')} : ${v('graceUndone')})`;
  const statusPath = `"/metadata/annotations/${STATUS.replaceAll('~', '~0').replaceAll('/', '~1')}"`;
  return [
    // Most pods are neither injected nor carry an earlier pass: the cheap test first.
    `(!${v('hasStatus')} && !${v('planning')}) || !${v('expressible')} ? [] :`,
    // preStops written, unless there already (the policy is called again on its own output)
    `${v('indices')}.filter(i, ${v('planned')}[i] > 0 && !(${v('written')}[i] && ` +
      `object.spec.containers[i].lifecycle.preStop.sleep.seconds == ${v('planned')}[i])).map(i, has(object.spec.containers[i].lifecycle) ? ` +
      `JSONPatch{op: "add", path: ${path('i', '/lifecycle/preStop')}, value: ${sleepValue('i')}} : ` +
      `JSONPatch{op: "add", path: ${path('i', '/lifecycle')}, value: {"preStop": ${sleepValue('i')}}}) +`,
    // an earlier pass's preStops undone
    `${v('indices')}.filter(i, ${v('planned')}[i] == 0 && ${v('written')}[i]).map(i, ` +
      `JSONPatch{op: "remove", path: "/spec/containers/" + string(i) + (${v('lifecycleDropped')}[i] ? "/lifecycle" : "/lifecycle/preStop")}) +`,
    // env: an earlier pass's removed, this one's added
    `${v('indices')}.filter(i, (i in ${v('exitEnv')} || (${v('statusCanonical')} && object.spec.containers[i].name in ${v('recordedEnv')})) && ` +
      `${envFinal('i')} != ${envReceived('i')}).map(i, ${envFinal('i')}.size() == 0 ? ` +
      `JSONPatch{op: "remove", path: ${path('i', '/env')}} : ` +
      `JSONPatch{op: "add", path: ${path('i', '/env')}, value: ${envFinal('i')}}) +`,
    `(${graceFinal} == ${v('graceReceived')} ? [] : ${graceFinal} == -1 ? ` +
      `[JSONPatch{op: "remove", path: "/spec/terminationGracePeriodSeconds"}] : ` +
      `[JSONPatch{op: "add", path: "/spec/terminationGracePeriodSeconds", value: ${graceFinal}}]) +`,
    `(!${v('planning')} ? [JSONPatch{op: "remove", path: ${statusPath}}] : ${v('statusText')} == ${v('statusJson')} ? [] : ` +
      `has(object.metadata.annotations) ? [JSONPatch{op: "add", path: ${statusPath}, value: ${v('statusJson')}}] : ` +
      `[JSONPatch{op: "add", path: "/metadata/annotations", value: {${str(STATUS)}: ${v('statusJson')}}}])`,
  ].join('\n');
}

// ------------------------------------------------------------ the objects

export interface PolicyObjectsOptions {
  /** Name of the policy, its binding and its params ConfigMap. */
  name: string;
  /** Where the params ConfigMap lives; never injected, as serve's own namespace. */
  namespace: string;
  /** Namespaces never injected, whatever they say (the webhook's table). */
  systemNamespaces: readonly string[];
}

type KubeObject = Record<string, unknown>;

const DESCRIPTION_ANNOTATION = 'kubernetes.io/description';

/** What the policy does and does not do, for its description annotation. */
export function policyDescription(): string {
  return (
    'prestop-injector as a MutatingAdmissionPolicy: sleep-action preStop hooks on app ' +
    'containers, fixed holds for Linkerd, helper sidecars and Istio proxies that cannot poll ' +
    'sockets, and the grace period raised to fit, as the webhook plans them. Pods it cannot ' +
    `plan exactly are left unchanged: ${NOT_EXPRESSED.join('; ')}.`
  );
}

/** The MutatingAdmissionPolicy: static, the same for every cluster and setting. */
export function admissionPolicy(
  options: Pick<PolicyObjectsOptions, 'name' | 'systemNamespaces'>,
): KubeObject {
  return {
    apiVersion: POLICY_API_VERSION,
    kind: 'MutatingAdmissionPolicy',
    metadata: {
      name: options.name,
      annotations: { [DESCRIPTION_ANNOTATION]: policyDescription() },
    },
    spec: {
      paramKind: { apiVersion: 'v1', kind: 'ConfigMap' },
      matchConstraints: {
        resourceRules: [
          {
            apiGroups: [''],
            apiVersions: ['v1'],
            operations: ['CREATE'],
            resources: ['pods'],
          },
        ],
        namespaceSelector: {
          matchExpressions: [
            {
              key: 'kubernetes.io/metadata.name',
              operator: 'NotIn',
              values: [...options.systemNamespaces],
            },
          ],
        },
      },
      // An error (a bug, or a cost limit) admits the pod unchanged, as the webhook fails open.
      failurePolicy: 'Ignore',
      // Called again after a later webhook (a mesh injector) changed the pod.
      reinvocationPolicy: 'IfNeeded',
      variables: policyVariables(),
      mutations: [{ patchType: 'JSONPatch', jsonPatch: { expression: patchExpression() } }],
    },
  };
}

/** The settings as the policy's params: the ConfigMap serve's flags would be. */
export function policyParams(
  settings: Settings,
  planner: PlannerConfig,
  options: Pick<PolicyObjectsOptions, 'name' | 'namespace'>,
): KubeObject {
  const enabled = (on: boolean) => (on ? 'enabled' : 'disabled');
  const data: Record<string, string> = {
    [PARAM_KEYS.inject]: enabled(settings.inject),
    [PARAM_KEYS.mode]: settings.mode,
    [PARAM_KEYS.delaySeconds]: String(settings.delaySeconds),
    [PARAM_KEYS.drainTimeoutSeconds]: String(settings.drainTimeoutSeconds),
    [PARAM_KEYS.drainQuietSeconds]: String(settings.drainQuietSeconds),
    [PARAM_KEYS.sidecars]: enabled(settings.sidecars),
    [PARAM_KEYS.distrolessPatterns]: planner.distrolessPatterns.join(','),
    [PARAM_KEYS.helperSidecars]: planner.helperSidecars.join(','),
  };
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: options.name, namespace: options.namespace },
    data,
  };
}

/** The binding: every namespace but the system ones and the params' own. */
function policyBinding(options: PolicyObjectsOptions): KubeObject {
  return {
    apiVersion: POLICY_API_VERSION,
    kind: 'MutatingAdmissionPolicyBinding',
    metadata: { name: options.name },
    spec: {
      policyName: options.name,
      // A missing ConfigMap leaves pods alone rather than refusing them.
      paramRef: {
        name: options.name,
        namespace: options.namespace,
        parameterNotFoundAction: 'Allow',
      },
      matchResources: {
        namespaceSelector: {
          matchExpressions: [
            {
              key: 'kubernetes.io/metadata.name',
              operator: 'NotIn',
              values: [options.namespace],
            },
          ],
        },
      },
    },
  };
}

/** What the policy cannot express among the settings themselves. */
export function settingsProblem(settings: Settings, planner: PlannerConfig): string | null {
  if (settings.mode === 'drain') {
    return 'drain mode runs a shell script, which the policy cannot write: use the webhook';
  }
  const nonAscii = planner.distrolessPatterns.find((p) =>
    [...p].some((c) => c.charCodeAt(0) > 0x7f),
  );
  if (nonAscii !== undefined) {
    return `distroless pattern ${JSON.stringify(nonAscii)}: the policy matches ASCII patterns only`;
  }
  return null;
}

/** The ConfigMap, the policy and its binding, in the order to apply them. */
export function policyObjects(
  settings: Settings,
  planner: PlannerConfig,
  options: PolicyObjectsOptions,
): KubeObject[] {
  return [
    policyParams(settings, planner, options),
    admissionPolicy(options),
    policyBinding(options),
  ];
}
