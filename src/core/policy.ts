// Pod policy: annotations and server config -> the settings for one pod.
// Precedence, lowest first: built-in defaults < server config < namespace < pod.

import { Annotation } from './annotations.ts';

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

function parseEnabled(raw: string): Parsed<boolean> {
  const value = raw.trim().toLowerCase();
  if (value === 'enabled' || value === 'true') return { ok: true, value: true };
  if (value === 'disabled' || value === 'false') return { ok: true, value: false };
  return { ok: false, reason: 'expected "enabled" or "disabled"' };
}

function parseMode(raw: string): Parsed<Mode> {
  const value = raw.trim().toLowerCase();
  if (value === 'sleep' || value === 'drain') return { ok: true, value };
  return { ok: false, reason: 'expected "sleep" or "drain"' };
}

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

function parseNameList(raw: string): Parsed<string[] | null> {
  const names = raw
    .split(',')
    .map((name) => name.trim())
    .filter((name) => name !== '');
  if (names.length === 0) return { ok: false, reason: 'expected comma-separated container names' };
  const bad = names.find((name) => !CONTAINER_NAME.test(name) || name.length > 63);
  if (bad !== undefined) return { ok: false, reason: `"${bad}" is not a container name` };
  return { ok: true, value: [...new Set(names)] };
}

type SettingParsers = { [K in SettingName]: (raw: string) => Parsed<Settings[K]> };

/** The one table from setting to annotation key and parser. */
export const SETTING_SPECS: { [K in SettingName]: { key: string; parse: SettingParsers[K] } } = {
  inject: { key: Annotation.inject, parse: parseEnabled },
  mode: { key: Annotation.mode, parse: parseMode },
  delaySeconds: { key: Annotation.delaySeconds, parse: integerIn(0, 3600) },
  drainTimeoutSeconds: { key: Annotation.drainTimeoutSeconds, parse: integerIn(1, 3600) },
  drainQuietSeconds: { key: Annotation.drainQuietSeconds, parse: integerIn(0, 3600) },
  containers: { key: Annotation.containers, parse: parseNameList },
  sidecars: { key: Annotation.sidecars, parse: parseEnabled },
};

const SETTING_NAMES = Object.keys(SETTING_SPECS) as SettingName[];

/**
 * Parses one layer of raw string values (annotations, or config written the
 * same way). Bad values are dropped with a warning naming the key and value.
 */
export function parseLayer(
  raw: Readonly<Record<string, string | undefined>> | undefined,
  source: PolicyWarning['source'],
  keyOf: (name: SettingName) => string = (name) => SETTING_SPECS[name].key,
): { settings: Partial<Settings>; warnings: PolicyWarning[] } {
  const settings: Partial<Settings> = {};
  const warnings: PolicyWarning[] = [];
  if (raw === undefined) return { settings, warnings };
  for (const name of SETTING_NAMES) {
    const key = keyOf(name);
    const value = raw[key];
    if (value === undefined) continue;
    const parsed = SETTING_SPECS[name].parse(value);
    if (parsed.ok) {
      (settings as Record<string, unknown>)[name] = parsed.value;
    } else {
      warnings.push({
        key,
        value,
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
  namespaceAnnotations: Readonly<Record<string, string>> | undefined,
  podAnnotations: Readonly<Record<string, string>> | undefined,
): { settings: Settings; warnings: PolicyWarning[] } {
  const namespace = parseLayer(namespaceAnnotations, 'namespace');
  const pod = parseLayer(podAnnotations, 'pod');
  return {
    settings: mergeSettings(serverDefaults, namespace.settings, pod.settings),
    warnings: [...namespace.warnings, ...pod.warnings],
  };
}
