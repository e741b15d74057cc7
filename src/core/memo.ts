// Bounded caches for pure functions of small inputs (a duration string, an
// image name, a hook's few numbers). A cluster uses a handful of distinct
// values, so a small map answers almost every call; when one fills up it is
// emptied and refilled, which bounds its memory whatever the inputs.

const DEFAULT_LIMIT = 256;
/** Longer string keys are not kept: they would make the bound one of entries, not of memory. */
const MAX_KEY_LENGTH = 256;

/**
 * `fn` with its results kept per argument. Only short strings and numbers are
 * kept: anything else (the pod is untrusted JSON, whatever its type says) is
 * passed straight through.
 */
export function memoize<K extends string | number | undefined, V>(
  fn: (key: K) => V,
  limit = DEFAULT_LIMIT,
): (key: K) => V {
  const cache = new Map<K, V>();
  return (key) => {
    const kept = typeof key === 'string' ? key.length <= MAX_KEY_LENGTH : typeof key === 'number';
    if (!kept) return fn(key);
    // Lookups first: has() would cost a second one on every hit.
    const hit = cache.get(key);
    if (hit !== undefined || cache.has(key)) return hit as V;
    const value = fn(key);
    if (cache.size >= limit) cache.clear();
    cache.set(key, value);
    return value;
  };
}
