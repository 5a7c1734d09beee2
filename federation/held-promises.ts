/**
 * Promises held by name for a while, at most `max` of them (the oldest
 * dropped first). A load in flight is shared by every caller that misses
 * meanwhile; a load that fails, or whose value `keep` refuses, is not held,
 * so the next caller loads again.
 */
export class HeldPromises<T> {
  readonly #entries = new Map<string, { readonly at: number; readonly value: Promise<T> }>();
  readonly #ttlMs: number;
  readonly #max: number;
  readonly #now: () => number;
  readonly #keep: (value: T) => boolean;

  constructor(options: { ttlMs: number; max: number; now?: () => number; keep?: (value: T) => boolean }) {
    this.#ttlMs = options.ttlMs;
    this.#max = options.max;
    this.#now = options.now ?? Date.now;
    this.#keep = options.keep ?? (() => true);
  }

  get(name: string, load: () => Promise<T>): Promise<T> {
    const now = this.#now();
    const hit = this.#entries.get(name);
    // A clock that went back makes an entry stale too.
    if (hit !== undefined && now - hit.at < this.#ttlMs && now >= hit.at) return hit.value;
    const entry = { at: now, value: load() };
    const drop = () => { if (this.#entries.get(name) === entry) this.#entries.delete(name); };
    entry.value.then((value) => { if (!this.#keep(value)) drop(); }, drop);
    this.#entries.delete(name);
    if (this.#entries.size >= this.#max) this.#entries.delete(this.#entries.keys().next().value!);
    this.#entries.set(name, entry);
    return entry.value;
  }

  clear(): void {
    this.#entries.clear();
  }
}
