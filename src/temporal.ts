import { Temporal } from "@js-temporal/polyfill";

// Node 24 has no global Temporal yet. Fedify imports this same polyfill, so
// installing it globally gives our code (typed by lib esnext.temporal) the
// very classes Fedify checks against.
if (!("Temporal" in globalThis)) {
  Object.defineProperty(globalThis, "Temporal", { value: Temporal, writable: true, configurable: true });
}
