import { AsyncLocalStorage } from "node:async_hooks";
import { configure, getConsoleSink, getLogger, type Logger, reset } from "@logtape/logtape";
import type { LogLevel } from "./config.ts";

let configured = false;

/**
 * One LogTape configuration for our logs and Fedify's (which logs under
 * "fedify"). Fedify's own "info" chatter is raised to "warning" unless the
 * operator asks for debug, so a busy inbox does not drown the console.
 */
export async function setupLogging(level: LogLevel): Promise<void> {
  if (configured) await reset();
  configured = true;
  await configure({
    // Fedify attaches request and trace context to its log records through
    // it; without it LogTape warns at every start.
    contextLocalStorage: new AsyncLocalStorage(),
    sinks: { console: getConsoleSink() },
    loggers: [
      { category: "muster", lowestLevel: level, sinks: ["console"] },
      { category: "fedify", lowestLevel: level === "debug" ? "debug" : level === "error" ? "error" : "warning", sinks: ["console"] },
      // Every request goes through Fedify first, so it logs each 4xx of the
      // web app (a bot's 404, a reused setup link's 403) as a warning; the
      // refusals that matter (bad signatures) are logged where they happen.
      { category: ["fedify", "federation", "http"], lowestLevel: level === "debug" ? "debug" : "error" },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["console"] },
    ],
  });
}

export function logger(...category: string[]): Logger {
  return getLogger(["muster", ...category]);
}
