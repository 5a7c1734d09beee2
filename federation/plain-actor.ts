import { createPublicKey, type KeyObject } from "node:crypto";
import { Object as APObject, getActorTypeName, isActor } from "@fedify/vocab";
import { buildHandle, type CachedActor } from "../src/actors/remote-actors.ts";
import { canonicalHttpUrl } from "./canonical-url.ts";
import { createOfflineContextLoader, createOfflineDocumentLoader } from "./remote-actor-parse.ts";
import { isCollectiveActor } from "./relationships.ts";

/*
 * A follower's actor document read as plain JSON
 * -----------------------------------------------
 * The follow's fast path (follow-fast-path.ts) needs five things from the
 * actor it fetched: its type, preferredUsername, inbox, shared inbox and the
 * key that signed the Follow (with its owner), plus whether it names aliases.
 * Reading them through Fedify's vocabulary (JSON-LD expansion, then the PEM
 * through pkijs, then the key's JSON-LD again for the key cache) was about a
 * sixth of the join's CPU. Here they are read from the JSON as sent, but only
 * when that reading cannot differ from Fedify's:
 *
 * - the @context starts with the ActivityStreams context and names only
 *   contexts from ALLOWED_CONTEXTS (preloaded, never fetched) plus inline
 *   objects that define no keyword (@vocab, @language, @base, @protected…),
 *   none of the terms or type names read here, no prefix those use, and no
 *   term whose IRI is one of the properties read here (so no other key of the
 *   document can add a second inbox or key);
 * - every key of the document, its publicKey and its endpoints is a plain
 *   term (no "@" but the top-level @context, no ":" compact or absolute IRI),
 *   and none is an alias the allowed contexts define for a property read here
 *   (nameMap and the like);
 * - the values read are plain strings, the URLs in their canonical spelling;
 *   the type is exactly "Person" (anything collective keeps Fedify's path);
 * - and, once per distinct @context (kept, bounded), a canary document with
 *   that context is read both ways and must come out the same through
 *   Fedify: this catches whatever the allowed contexts together do that the
 *   rules above do not model (a default language, a protected-term clash
 *   that makes Fedify's parse fail).
 *
 * Anything else returns undefined, and the caller reads the document through
 * Fedify as before. The fetch itself (signed, private-address rule after DNS,
 * size limit, timeouts, the host check) is the caller's and unchanged.
 */

const AS = "https://www.w3.org/ns/activitystreams";
const AS_NS = `${AS}#`;
const SEC_NS = "https://w3id.org/security#";
const LDP_NS = "http://www.w3.org/ns/ldp#";

/** Contexts whose terms were checked (test/plain-actor.test.ts): none maps a property read here under another name but those in ALIAS_KEYS. */
export const ALLOWED_CONTEXTS: ReadonlySet<string> = new Set([
  AS,
  "https://w3id.org/security/v1",
  "https://w3id.org/security/data-integrity/v1",
  "https://www.w3.org/ns/did/v1",
  "https://w3id.org/security/multikey/v1",
  "https://gotosocial.org/ns",
]);

/** The properties read here, by IRI. */
export const READ_IRIS: ReadonlySet<string> = new Set([
  `${LDP_NS}inbox`,
  `${AS_NS}sharedInbox`,
  `${AS_NS}endpoints`,
  `${AS_NS}preferredUsername`,
  `${AS_NS}name`,
  `${AS_NS}alsoKnownAs`,
  `${SEC_NS}publicKey`,
  `${SEC_NS}owner`,
  `${SEC_NS}publicKeyPem`,
]);

/** Terms of the allowed contexts that name a property in READ_IRIS under another name: a document using one is read by Fedify. */
export const ALIAS_KEYS: ReadonlySet<string> = new Set(["nameMap", "preferredUsernameMap"]);

/** Names an inline context must not define: the terms and types read here, the keyword aliases, the prefixes their IRIs use. */
const RESERVED = new Set([
  "id", "type", "inbox", "endpoints", "sharedInbox", "publicKey", "owner", "publicKeyPem", "preferredUsername", "name",
  "nameMap", "preferredUsernameMap",
  "Person", "Group", "Service", "Application", "Organization", "CryptographicKey", "Key", "Multikey",
  "as", "ldp", "sec", "xsd", "rdf", "rdfs", "owl", "dc", "dcterms", "vcard", "http", "https",
]);
/** An inline context may redefine these (Mastodon and Fedify do); a document that uses alsoKnownAs is read by Fedify anyway. */
const REDEFINABLE = new Set(["alsoKnownAs", "movedTo", "manuallyApprovesFollowers"]);

/** Prefixes an inline definition may use without defining them, as the allowed contexts define them. */
const KNOWN_PREFIXES: Readonly<Record<string, string>> = {
  as: AS_NS,
  ldp: LDP_NS,
  sec: SEC_NS,
  xsd: "http://www.w3.org/2001/XMLSchema#",
};

const KEY_FIELDS = new Set(["id", "type", "owner", "publicKeyPem"]);
const CONTAINERS = new Set(["@list", "@set", "@language", "@index"]);
const PLAIN_KEY = /^[A-Za-z_][A-Za-z0-9_-]*$/;
const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):/;

/** What the fast path takes from the follower's actor. */
export interface PlainActor {
  readonly actor: CachedActor;
  /** The key that signed the Follow, for node:crypto's verify. */
  readonly key: KeyObject;
  /** The key as Fedify's key cache stores it (KvKeyCache.set: the key's JSON-LD). */
  readonly keyJsonLd: Record<string, unknown>;
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/** The IRI an inline term definition names, resolved as JSON-LD would; undefined when not understood here. */
function definedIri(definition: unknown, inline: Json): string | undefined {
  let iri: unknown = definition;
  if (isObject(definition)) {
    for (const k of Object.keys(definition)) if (k !== "@id" && k !== "@type" && k !== "@container") return undefined;
    if (definition["@type"] !== undefined && typeof definition["@type"] !== "string") return undefined;
    if (definition["@container"] !== undefined && !CONTAINERS.has(definition["@container"] as string)) return undefined;
    iri = definition["@id"];
  }
  if (typeof iri !== "string" || iri.startsWith("@")) return undefined;
  const m = SCHEME.exec(iri);
  if (!m) return undefined;
  const prefix = m[1]!;
  if (prefix === "http" || prefix === "https") return iri.startsWith(`${prefix}://`) ? iri : undefined;
  const base = Object.hasOwn(inline, prefix) ? inline[prefix] : KNOWN_PREFIXES[prefix];
  if (typeof base !== "string" || !/^https?:\/\//.test(base)) return undefined;
  return base + iri.slice(prefix.length + 1);
}

/** Whether an inline context object keeps every property read here meaning what ActivityStreams says. */
function harmlessInline(inline: Json): boolean {
  for (const [term, definition] of Object.entries(inline)) {
    if (term.startsWith("@") || !PLAIN_KEY.test(term)) return false;
    if (RESERVED.has(term)) return false;
    const iri = definedIri(definition, inline);
    if (iri === undefined) {
      // A prefix definition (a bare namespace IRI) is fine when it is an http(s) IRI not redefining a reserved prefix.
      if (typeof definition === "string" && /^https?:\/\/[^\s]*[#/]$/.test(definition)) continue;
      return false;
    }
    if (READ_IRIS.has(iri) && !(REDEFINABLE.has(term) && iri === `${AS_NS}${term}`)) return false;
  }
  return true;
}

/** Whether the @context is one this reader understands (see the comment at the top). */
function plainContext(context: unknown): boolean {
  const list = Array.isArray(context) ? context : [context];
  if (list[0] !== AS || list.length > 16) return false;
  for (const c of list) {
    if (typeof c === "string") {
      if (!ALLOWED_CONTEXTS.has(c)) return false;
    } else if (!isObject(c) || !harmlessInline(c)) return false;
  }
  return true;
}

/** Whether every key of `o` is a plain term (no keyword, no IRI) that is no alias of a property read here. */
function plainKeys(o: Json, top: boolean): boolean {
  for (const k of Object.keys(o)) {
    if (top && k === "@context") continue;
    if (!PLAIN_KEY.test(k) || ALIAS_KEYS.has(k)) return false;
  }
  return true;
}

/** The PEM as node:crypto's RSA key, or undefined when it is no RSA public key node reads as Fedify's importPem would. */
function rsaKey(pem: string): KeyObject | undefined {
  const spki = pem.startsWith("-----BEGIN PUBLIC KEY-----\n");
  if (!spki && !pem.startsWith("-----BEGIN RSA PUBLIC KEY-----\n")) return undefined;
  try {
    const key = createPublicKey({ key: pem, format: "pem" });
    return key.asymmetricKeyType === "rsa" ? key : undefined;
  } catch {
    return undefined;
  }
}

/** What KvKeyCache.set writes for the key: CryptographicKey#toJsonLd, which gives back the key's node of the expanded document (the PEM as sent). */
function keyJsonLd(keyId: string, owner: string, pem: string, typed: boolean): Json {
  // In the expanded document's order: its keys as the compact keys id, owner, publicKeyPem, type sort.
  return {
    "@id": keyId,
    [`${SEC_NS}owner`]: [{ "@id": owner }],
    [`${SEC_NS}publicKeyPem`]: [{ "@value": pem }],
    ...(typed ? { "@type": [`${SEC_NS}Key`] } : {}),
  };
}

/** The fields read here, from a document whose shape and context passed; undefined when a value is not plain. */
function readFields(doc: Json, actorId: string, keyId: string, fetchedAt: number): PlainActor | undefined {
  if (doc.id !== actorId || doc.type !== "Person") return undefined;
  if (doc.alsoKnownAs !== undefined) return undefined;
  const inbox = canonicalHttpUrl(doc.inbox)?.href;
  if (inbox === undefined) return undefined;
  let sharedInbox: string | null = null;
  if (doc.endpoints !== undefined) {
    if (!isObject(doc.endpoints) || !plainKeys(doc.endpoints, false) || "id" in doc.endpoints || "type" in doc.endpoints) return undefined;
    if (doc.endpoints.sharedInbox !== undefined) {
      const shared = canonicalHttpUrl(doc.endpoints.sharedInbox)?.href;
      if (shared === undefined) return undefined;
      sharedInbox = shared;
    }
  }
  const username = doc.preferredUsername;
  if (username !== undefined && typeof username !== "string") return undefined;
  const keys = Array.isArray(doc.publicKey) ? doc.publicKey : [doc.publicKey];
  let found: { owner: string; key: KeyObject; pem: string; typed: boolean } | undefined;
  for (const k of keys) {
    if (!isObject(k) || !plainKeys(k, false)) return undefined;
    for (const field of Object.keys(k)) if (!KEY_FIELDS.has(field)) return undefined;
    if (k.type !== undefined && k.type !== "CryptographicKey") return undefined;
    if (canonicalHttpUrl(k.id) === undefined || canonicalHttpUrl(k.owner) === undefined || typeof k.publicKeyPem !== "string") return undefined;
    if (k.id !== keyId) continue;
    // Two keys with the signing key's id: Fedify's getPublicKeys would take the first; left to it.
    if (found) return undefined;
    const key = rsaKey(k.publicKeyPem);
    if (!key) return undefined;
    found = { owner: k.owner as string, key, pem: k.publicKeyPem, typed: k.type !== undefined };
  }
  // Fedify's rule plus ours (follow-fast-path.ts keyOf): the key is the actor's own.
  if (!found || found.owner !== actorId) return undefined;
  const id = new URL(actorId);
  return {
    actor: { id: actorId, type: "Person", handle: buildHandle(username ?? null, id), name: null, inbox, sharedInbox, fetchedAt },
    key: found.key,
    keyJsonLd: keyJsonLd(keyId, found.owner, found.pem, found.typed),
  };
}

const offlineDocuments = createOfflineDocumentLoader();
const offlineContexts = createOfflineContextLoader();

/** @context text (and whether the key names its type) to whether the canary read the same both ways. */
const vetted = new Map<string, Promise<boolean>>();
const MAX_VETTED = 64;

// A fixed RSA key for the canary (the public half of a throwaway pair): only its parsing is compared.
const CANARY_PEM = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtBdE55VmV9gTrhJmRF1K\neX7xTRo17JGQ7d1/KJWsQ1zH62GGeG/E+BG3h/BRtfgI7Z9jwfNEyx8g/Ue8rSeZ\n3M7yc09/Z90uwGVY24hxwAJyzWIN2cv5ayhdtk268byT6NX98a9PQcHlx5i6Bhef\nMlpY73I5gxYlofvwJTHq/VupXVw9K76KId2AgR2z8tLiXPc8TED56HulDWdMlWn3\n9B4mWNYmzMBF7lOl58Ws6bFsiv8GnI3uEywzUGhXqz4242FGveHdAGBaCpUYrm8W\nmT8PArqv3B4fCD1ghakSmxRr3y9clwhkC+kB/aoT6z313uZYbQuvZF1bfbh6EZWm\nIQIDAQAB\n-----END PUBLIC KEY-----\n";

/** Reads `doc` through Fedify, as the fast path did, into the same fields; undefined where Fedify's reading fails or says otherwise. */
export async function readThroughFedify(doc: Json, keyId: string): Promise<{ actor: Omit<CachedActor, "fetchedAt">; keyJsonLd: unknown; aliases: number } | undefined> {
  let object;
  try {
    object = await APObject.fromJsonLd(doc, { documentLoader: offlineDocuments, contextLoader: offlineContexts });
  } catch {
    return undefined;
  }
  if (!isActor(object) || isCollectiveActor(object) || !object.id) return undefined;
  let keyJson: unknown;
  try {
    for await (const key of object.getPublicKeys({ documentLoader: offlineDocuments, contextLoader: offlineContexts, suppressError: true })) {
      if (key.id?.href !== keyId) continue;
      if (key.ownerId?.href !== object.id.href) return undefined;
      keyJson = await key.toJsonLd({ contextLoader: offlineContexts });
      break;
    }
  } catch {
    return undefined;
  }
  if (keyJson === undefined) return undefined;
  const id = object.id;
  return {
    actor: {
      id: id.href,
      type: getActorTypeName(object),
      handle: buildHandle(object.preferredUsername == null ? null : String(object.preferredUsername), id),
      name: null,
      inbox: object.inboxId?.href ?? null,
      sharedInbox: object.endpoints?.sharedInbox?.href ?? null,
    },
    keyJsonLd: keyJson,
    aliases: object.aliasIds.length,
  };
}

/** Whether Fedify reads a canary document with this context as the plain reader does. */
async function canaryAgrees(context: unknown, keyTyped: boolean): Promise<boolean> {
  const id = "https://canary.invalid/users/c";
  const keyId = `${id}#main-key`;
  const canary: Json = {
    "@context": context,
    id,
    type: "Person",
    inbox: `${id}/inbox`,
    preferredUsername: "c",
    endpoints: { sharedInbox: "https://canary.invalid/inbox" },
    publicKey: { id: keyId, ...(keyTyped ? { type: "CryptographicKey" } : {}), owner: id, publicKeyPem: CANARY_PEM },
  };
  const plain = readFields(canary, id, keyId, 0);
  const fedify = await readThroughFedify(canary, keyId);
  if (!plain || !fedify || fedify.aliases !== 0) return false;
  const { fetchedAt: _, ...mine } = plain.actor;
  return JSON.stringify(mine) === JSON.stringify(fedify.actor) && JSON.stringify(plain.keyJsonLd) === JSON.stringify(fedify.keyJsonLd);
}

async function contextVetted(context: unknown, keyTyped: boolean): Promise<boolean> {
  const text = `${keyTyped ? "t" : "-"}${JSON.stringify(context)}`;
  let verdict = vetted.get(text);
  if (verdict === undefined) {
    if (vetted.size >= MAX_VETTED) vetted.delete(vetted.keys().next().value!);
    verdict = canaryAgrees(context, keyTyped).catch(() => false);
    vetted.set(text, verdict);
  }
  return verdict;
}

/**
 * The follower's actor, its signing key and the key's cache entry, read from
 * the document as plain JSON; undefined when this reading might differ from
 * Fedify's (the caller then reads it through Fedify).
 */
export async function readPlainActor(doc: unknown, actorId: string, keyId: string, fetchedAt: number): Promise<PlainActor | undefined> {
  if (!isObject(doc) || !plainContext(doc["@context"]) || !plainKeys(doc, true)) return undefined;
  const read = readFields(doc, actorId, keyId, fetchedAt);
  if (!read) return undefined;
  const keys = Array.isArray(doc.publicKey) ? doc.publicKey : [doc.publicKey];
  const keyTyped = keys.some((k) => isObject(k) && k.type !== undefined);
  return (await contextVetted(doc["@context"], keyTyped)) ? read : undefined;
}
