import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { ConfigError } from "../config.ts";

// The server's private keys (actor keys, treasury keys) are stored sealed with
// AES-256-GCM from node:crypto: an authenticated cipher, so a wrong key or an
// altered row fails loudly instead of yielding garbage. No library is needed.

const PREFIX = "enc:v1:";

export class SecretBox {
  readonly #key: Buffer;
  constructor(key: Uint8Array) {
    if (key.length !== 32) throw new ConfigError("the secret key must be 32 bytes");
    this.#key = Buffer.from(key);
  }

  /** `enc:v1:<iv>:<tag>:<ciphertext>`, base64 parts. */
  seal(plaintext: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.#key, iv);
    const body = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
    return `${PREFIX}${iv.toString("base64")}:${cipher.getAuthTag().toString("base64")}:${body.toString("base64")}`;
  }

  /** Throws WrongSecretKey when the value was sealed with another key (or altered). */
  open(stored: string): string {
    if (!isSealed(stored)) return stored;
    const [iv, tag, body] = stored.slice(PREFIX.length).split(":");
    try {
      const decipher = createDecipheriv("aes-256-gcm", this.#key, Buffer.from(iv!, "base64"));
      decipher.setAuthTag(Buffer.from(tag!, "base64"));
      return Buffer.concat([decipher.update(Buffer.from(body!, "base64")), decipher.final()]).toString("utf8");
    } catch {
      throw new WrongSecretKey();
    }
  }
}

export class WrongSecretKey extends Error {
  override name = "WrongSecretKey";
  constructor() {
    super("a stored key does not open with this server's secret key");
  }
}

export function isSealed(stored: string): boolean {
  return stored.startsWith(PREFIX);
}

export interface SecretKeySource {
  readonly box: SecretBox;
  /** Where the key came from, for messages: `MUSTER_SECRET_KEY` or the key file's path. */
  readonly origin: string;
  /** Set when the key is a file in DATA_DIR (no MUSTER_SECRET_KEY): the operator must back it up. */
  readonly file: string | null;
  /** The file was created just now. */
  readonly generated: boolean;
}

/**
 * Where the generated key lives without MUSTER_SECRET_KEY: DATA_DIR, or with
 * a SQLite database the directory of its file (DATA_DIR by default), so every
 * process opening that database (serve, worker, CLI) finds the same key.
 */
export function secretKeyFile(config: { databaseUrl: string; dataDir: string }): string {
  return join(config.databaseUrl.startsWith("sqlite:") ? dirname(resolve(config.databaseUrl.slice("sqlite:".length))) : config.dataDir, "secret.key");
}

/**
 * MUSTER_SECRET_KEY (64 hex digits or base64 of 32 bytes) when set; otherwise
 * the key file (secretKeyFile), generated on first start (mode 0600).
 */
export function loadSecretKey(env: Record<string, string | undefined>, file: string): SecretKeySource {
  const raw = env.MUSTER_SECRET_KEY?.trim();
  if (raw) return { box: new SecretBox(parseKey(raw, "MUSTER_SECRET_KEY")), origin: "MUSTER_SECRET_KEY", file: null, generated: false };
  const dataDir = dirname(file);
  if (existsSync(file)) return { box: new SecretBox(parseKey(readFileSync(file, "utf8").trim(), file)), origin: file, file, generated: false };
  mkdirSync(dataDir, { recursive: true });
  const key = randomBytes(32);
  // wx: two processes starting at once must not both write; the loser reads the winner's.
  try {
    writeFileSync(file, key.toString("hex") + "\n", { mode: 0o600, flag: "wx" });
    chmodSync(file, 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    return { box: new SecretBox(parseKey(readFileSync(file, "utf8").trim(), file)), origin: file, file, generated: false };
  }
  return { box: new SecretBox(key), origin: file, file, generated: true };
}

function parseKey(raw: string, where: string): Uint8Array {
  if (/^[0-9a-fA-F]{64}$/.test(raw)) return Buffer.from(raw, "hex");
  const b = /^[A-Za-z0-9+/_-]{43}=?$/.test(raw) ? Buffer.from(raw, "base64") : null;
  if (b?.length === 32) return b;
  throw new ConfigError(`${where} must hold a 32-byte key as 64 hex digits or base64 (make one with: openssl rand -hex 32)`);
}
