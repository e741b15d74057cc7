// Pod policy: annotations and server config -> the settings for one pod.
// Precedence, lowest first: built-in defaults < server config < namespace < pod.

import { Annotation } from './annotations.ts';
import { isRecord } from './types.ts';

export type Mode = 'sleep' | 'drain';

export interface Settings {
  inject: boolean;
  mode: Mode;
  delaySeconds: number;
  drainTimeoutSeconds: number;
  /** Drain also ends after this many seconds without TCP traffic in the pod; 0: off. */
  drainQuietSeconds: number;
  /** Names of the app containers to hook; null means every app container. */
  containers: string[] | null;
  /** Whether mesh proxies and configured helper sidecars are ordered. */
  sidecars: boolean;
}

export const BUILTIN_DEFAULTS: Readonly<Settings> = Object.freeze({
  inject: false,
  mode: 'sleep',
  delaySeconds: 10,
  drainTimeoutSeconds: 30,
  drainQuietSeconds: 0,
  containers: null,
  sidecars: true,
});

export type SettingName = keyof Settings;

export interface PolicyWarning {
  /** The annotation key (or config name) that carried the bad value. */
  key: string;
  value: string;
  source: 'config' | 'namespace' | 'pod';
  /** Why the value was refused. */
  reason: string;
  message: string;
}

type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

/** The words of the enabled/disabled settings, after trim and lower case. */
const ENABLED_WORDS: Readonly<Record<string, boolean>> = {
  enabled: true,
  true: true,
  disabled: false,
  false: false,
};
const MODE_WORDS: Readonly<Record<string, Mode>> = { sleep: 'sleep', drain: 'drain' };

function wordsParser<T>(words: Readonly<Record<string, T>>, reason: string) {
  return (raw: string): Parsed<T> => {
    const value = raw.trim().toLowerCase();
    if (Object.hasOwn(words, value)) return { ok: true, value: words[value]! };
    return { ok: false, reason };
  };
}

const parseEnabled = wordsParser(ENABLED_WORDS, 'expected "enabled" or "disabled"');
const parseMode = wordsParser(MODE_WORDS, 'expected "sleep" or "drain"');

function integerIn(min: number, max: number) {
  return (raw: string): Parsed<number> => {
    const text = raw.trim();
    if (!/^\d+$/.test(text)) return { ok: false, reason: `expected an integer ${min}..${max}` };
    const value = Number(text);
    if (value < min || value > max) {
      return { ok: false, reason: `out of range, expected ${min}..${max}` };
    }
    return { ok: true, value };
  };
}

const CONTAINER_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const CONTAINER_NAME_MAX_LENGTH = 63;

function parseNameList(raw: string): Parsed<string[] | null> {
  const names = raw
    .split(',')
    .map((name) => name.trim())
    .filter((name) => name !== '');
  if (names.length === 0) return { ok: false, reason: 'expected comma-separated container names' };
  const bad = names.find(
    (name) => !CONTAINER_NAME.test(name) || name.length > CONTAINER_NAME_MAX_LENGTH,
  );
  if (bad !== undefined) return { ok: false, reason: `"${bad}" is not a container name` };
  return { ok: true, value: [...new Set(names)] };
}

/**
 * What each parser accepts, as data (after trimming): the admission policy's
 * CEL is generated from it, so the two cannot drift apart.
 */
export type SettingSyntax =
  | { kind: 'words'; words: Readonly<Record<string, boolean | string>> }
  | { kind: 'integer'; min: number; max: number }
  | { kind: 'names'; pattern: RegExp; maxLength: number };

type SettingParsers = { [K in SettingName]: (raw: string) => Parsed<Settings[K]> };

function integerSetting(min: number, max: number) {
  return { parse: integerIn(min, max), syntax: { kind: 'integer', min, max } as const };
}

/** The one table from setting to annotation key, parser and what the parser accepts. */
export const SETTING_SPECS: {
  [K in SettingName]: { key: string; parse: SettingParsers[K]; syntax: SettingSyntax };
} = {
  inject: {
    key: Annotation.inject,
    parse: parseEnabled,
    syntax: { kind: 'words', words: ENABLED_WORDS },
  },
  mode: { key: Annotation.mode, parse: parseMode, syntax: { kind: 'words', words: MODE_WORDS } },
  delaySeconds: { key: Annotation.delaySeconds, ...integerSetting(0, 3600) },
  drainTimeoutSeconds: { key: Annotation.drainTimeoutSeconds, ...integerSetting(1, 3600) },
  drainQuietSeconds: { key: Annotation.drainQuietSeconds, ...integerSetting(0, 3600) },
  containers: {
    key: Annotation.containers,
    parse: parseNameList,
    syntax: { kind: 'names', pattern: CONTAINER_NAME, maxLength: CONTAINER_NAME_MAX_LENGTH },
  },
  sidecars: {
    key: Annotation.sidecars,
    parse: parseEnabled,
    syntax: { kind: 'words', words: ENABLED_WORDS },
  },
};

const SETTING_NAMES = Object.keys(SETTING_SPECS) as SettingName[];

/**
 * Parses one layer of raw string values (annotations, or config written the
 * same way). Bad values are dropped with a warning naming the key and value.
 */
export function parseLayer(
  raw: unknown,
  source: PolicyWarning['source'],
  keyOf: (name: SettingName) => string = (name) => SETTING_SPECS[name].key,
): { settings: Partial<Settings>; warnings: PolicyWarning[] } {
  const settings: Partial<Settings> = {};
  const warnings: PolicyWarning[] = [];
  // Absent, null (as kustomize and Helm write it) or not a map: no settings.
  if (!isRecord(raw)) return { settings, warnings };
  for (const name of SETTING_NAMES) {
    const key = keyOf(name);
    const value = raw[key];
    if (value === undefined || value === null) continue;
    // Annotation values are strings; YAML's unquoted 20 or true is not one.
    const parsed =
      typeof value === 'string'
        ? SETTING_SPECS[name].parse(value)
        : ({ ok: false, reason: 'expected a string (quote it in YAML)' } as const);
    if (parsed.ok) {
      (settings as Record<string, unknown>)[name] = parsed.value;
    } else {
      warnings.push({
        key,
        value: String(value),
        source,
        reason: parsed.reason,
        message: `ignored ${source} value ${JSON.stringify(value)} for ${key}: ${parsed.reason}`,
      });
    }
  }
  return { settings, warnings };
}

export function mergeSettings(base: Settings, ...layers: Partial<Settings>[]): Settings {
  const merged = { ...base };
  for (const layer of layers) {
    for (const name of SETTING_NAMES) {
      const value = layer[name];
      if (value !== undefined) (merged as Record<string, unknown>)[name] = value;
    }
  }
  return merged;
}

/**
 * Settings for one pod. `serverDefaults` already folds the built-in defaults
 * and the server config together.
 */
export function resolveSettings(
  serverDefaults: Settings,
  namespaceAnnotations: unknown,
  podAnnotations: unknown,
): { settings: Settings; warnings: PolicyWarning[]; podOptIn: boolean } {
  const namespace = parseLayer(namespaceAnnotations, 'namespace');
  const pod = parseLayer(podAnnotations, 'pod');
  return {
    settings: mergeSettings(serverDefaults, namespace.settings, pod.settings),
    warnings: [...namespace.warnings, ...pod.warnings],
    // The pod itself says inject: stronger than a namespace or server default.
    podOptIn: pod.settings.inject === true,
  };
}
