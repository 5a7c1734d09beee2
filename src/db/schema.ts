import type { ColumnType, Generated } from "kysely";

// Times are epoch milliseconds in BIGINT columns and booleans are 0/1 integers,
// so rows read back identically from SQLite and PostgreSQL.

export interface UnionsTable {
  id: string;
  slug: string;
  name: string;
  purpose: string;
  leader_handle: string | null;
  icon_url: string | null;
  manually_approves_followers: number;
  created_at: number;
  /** `invite`, `approval` or `open`. */
  join_policy: string;
  member_invite_limit: number;
  /** Who may read the member list and tree: `public`, `members`, `signed-in` (the default since 0007) or `officers`. */
  members_visibility: string;
  welcome_text: string | null;
  /** Who sees calls-to-action: `members` (followers-only) or `public`. */
  actions_visibility: string;
  /** Local time of the daily publication, `HH:MM`. */
  publish_time: string;
  /** IANA time zone of publish_time. */
  time_zone: string;
  /** Comma-separated words that make a reply a commitment. */
  commitment_words: string;
  /** Relaying members' posts: `off`, `approval` or `auto`. */
  relay_policy: string;
  /** Local date (YYYY-MM-DD) of the last daily publication. */
  last_published_on: string | null;
}

export interface ActionsTable {
  id: string;
  union_id: string;
  /** Publication number within the union; null until published. */
  seq: number | null;
  title: string;
  body_md: string;
  body_html: string;
  kind: string;
  link: string | null;
  goal: number | null;
  deadline: number | null;
  /** `queued`, `published` or `retracted`. */
  state: string;
  created_by: string | null;
  created_at: number;
  published_at: number | null;
  updated_at: number | null;
  retracted_at: number | null;
  goal_reached_at: number | null;
  closed_at: number | null;
  /** Members with a standing commitment (like, commitment reply, web button, done); kept by src/actions/responses.ts (0036). */
  committers: Generated<number>;
}

/** How many of one member's commitments to a call are standing (0036): the counter behind actions.committers. */
export interface ActionCommittersTable {
  action_id: string;
  member_id: string;
  standing: number;
}

export interface ActionLogTable {
  union_id: string;
  n: number;
  action_id: string;
  event: string;
  payload: string;
  prev_hash: string;
  hash: string;
  at: number;
}

export interface ActionResponsesTable {
  id: string;
  action_id: string;
  union_id: string;
  member_id: string;
  /** `commit`, `done`, `comment` or `boost`. */
  kind: string;
  /** `like`, `reply`, `announce` or `web`. */
  source: string;
  /** The activity (or web click) the response came from. */
  source_id: string;
  content: string | null;
  created_at: number;
  undone_at: number | null;
}

export interface RelayRequestsTable {
  id: Generated<number>;
  union_id: string;
  note_id: string;
  create_id: string | null;
  author_id: string;
  /** `pending`, `relayed` or `declined`. */
  state: string;
  excerpt: string | null;
  created_at: number;
  decided_at: number | null;
}

export interface FedifyMqDoneTable {
  dedupe_key: string;
  done_at: number;
}

export interface MembersTable {
  id: string;
  union_id: string;
  /** Null only for a leader's reserved place before their account follows. */
  actor_id: string | null;
  handle: string | null;
  /** `reserved`, `pending`, `active`, `left`, `removed`, `expelled`, `rejected` or `deleted`. */
  state: string;
  /** `leader`, `officer` or `member`. */
  role: string;
  portfolio: string | null;
  sponsor_id: string | null;
  /** Active descendants, maintained on join and leave. */
  subtree_size: number;
  /** The id of the Follow that asked to join: Accept and Reject must embed it. */
  follow_id: string | null;
  invite_id: string | null;
  joined_at: number | null;
  left_at: number | null;
  left_reason: string | null;
  removed_by: string | null;
  created_at: number;
  /** A member of an allied union who sponsored this one in (0030): outside this union's tree. */
  ally_sponsor_actor_id: Generated<string | null>;
  /** That sponsor's home union (its Group's actor id). */
  ally_sponsor_union: Generated<string | null>;
}

export interface MemberMovesTable {
  id: string;
  union_id: string;
  member_id: string;
  from_sponsor_id: string | null;
  to_sponsor_id: string | null;
  reason: string;
  at: number;
}

export interface InvitesTable {
  id: string;
  union_id: string;
  code: string;
  /** The sponsoring member; null means the union itself (its leader). */
  created_by: string | null;
  max_uses: number | null;
  uses: number;
  expires_at: number | null;
  revoked_at: number | null;
  created_at: number;
  /** 1 for the invite handed to a member on joining: their own invites take places from it. */
  welcome: Generated<number>;
  /** An invite given to a member of an allied union (0030): who joins with it records them as their sponsor. */
  ally_sponsor_actor_id: Generated<string | null>;
  ally_sponsor_union: Generated<string | null>;
}

export interface JoinClaimsTable {
  id: string;
  union_id: string;
  invite_id: string;
  handle: string;
  created_at: number;
  expires_at: number;
  used_at: number | null;
}

export interface ActorKeysTable {
  /** `union:<id>` or `instance`. */
  owner: string;
  /** `RSASSA-PKCS1-v1_5` or `Ed25519`. */
  algorithm: string;
  private_jwk: string;
  public_jwk: string;
  created_at: number;
}

export interface RemoteActorsTable {
  id: string;
  type: string;
  /** "" when it is usualHandle(id) (src/actors/remote-actors.ts, 0057): read it through handleOf. */
  handle: string | null;
  name: string | null;
  inbox: string | null;
  shared_inbox: string | null;
  fetched_at: number;
  // PostgreSQL also has key, key_form and key_expires_at (migration 0075: the actor's cached "#main-key",
  // federation/kysely-kv-store.ts actorOfKey), read and written by raw SQL there only.
}

export interface InboxActivitiesTable {
  id: string;
  type: string;
  actor: string;
  /** The union whose inbox received it, or null for the shared inbox. */
  union_id: string | null;
  received_at: number;
}

/** An inbound activity being processed now (see migrations/0008). */
export interface InboxClaimsTable {
  id: string;
  /** Epoch ms after which a redelivery may take the claim over. */
  claimed_until: number;
}

export interface InstanceSettingsTable {
  key: string;
  value: string;
}

/** One row per scope; triggers (migration 0018) bump it on any change to what cached documents show. */
export interface DocumentVersionsTable {
  scope: string;
  version: number | string | bigint;
}

export interface FedifyKvTable {
  key: string;
  value: string;
  expires_at: number | null;
}

/** Fedify's cached public keys in compact form (migration 0064, federation/kv-public-keys.ts). */
export interface FedifyPublicKeysTable {
  key_id: string;
  /** null when it is the key id's document (the key id up to "#"). */
  owner: string | null;
  /** DER SubjectPublicKeyInfo, or an RSA-2048 key's 256-byte modulus alone. */
  key: Uint8Array;
  /** Which JSON it reads back as (FORM_* in federation/kv-public-keys.ts). */
  form: number;
  expires_at: number;
}

export interface FedifyMqTable {
  id: Generated<number>;
  queue: string;
  message: string;
  ordering_key: string | null;
  available_at: number;
  lease_owner: string | null;
  lease_until: number | null;
  attempts: number;
  last_error: string | null;
  created_at: number;
  /** Set for Fedify deliveries: activity, inbox and attempt. */
  dedupe_key: string | null;
  /** The fedify_mq_payloads row holding this delivery's activity, when it is kept apart. */
  payload: string | null;
  /** A gated delivery's member gate (union and member ids), written at enqueue by the lanes whose claim reads it (migration 0089). */
  gate_union_id: ColumnType<string | null, string | null | undefined, string | null>;
  gate_member_id: ColumnType<string | null, string | null | undefined, string | null>;
  /** A delivery's inbox origin (scheme://host[:port]), written likewise: its server's state is read with the claim. */
  inbox_origin: ColumnType<string | null, string | null | undefined, string | null>;
}

/** An activity kept once for all the deliveries of a fan-out that name it. */
export interface FedifyMqPayloadsTable {
  /** SHA-256 (hex) of body. */
  id: string;
  body: string;
  created_at: number;
}

export interface FedifyMqDeadTable {
  id: number;
  queue: string;
  message: string;
  ordering_key: string | null;
  attempts: number;
  last_error: string | null;
  created_at: number;
  died_at: number;
}

export interface LoginCodesTable {
  id: string;
  /** SHA-256 (hex) of the one-time code; the code itself is only in the sign-in link. */
  code_hash: string;
  union_id: string;
  member_id: string;
  created_at: number;
  expires_at: number;
  used_at: number | null;
}

export interface SessionsTable {
  id: string;
  /** SHA-256 (hex) of the cookie's token. */
  token_hash: string;
  union_id: string;
  member_id: string;
  created_at: number;
  expires_at: number;
  revoked_at: number | null;
}

export interface RateLimitHitsTable {
  id: string;
  /** What is limited, e.g. `login:handle:@a@b` or `login:ip:203.0.113.9`. */
  bucket: string;
  at: number;
}

/** An actor this union features in one of its FEP-7aa9 collections (see migrations/0031). */
export interface FeaturedItemsTable {
  /** Also names our FeatureRequest: /u/<slug>/featured-requests/<id>. */
  id: string;
  union_id: string;
  /** `allies` or `cabinet`. */
  collection: string;
  actor_id: string;
  /** `requested`, `accepted`, `rejected` or `withdrawn`. */
  state: string;
  /** The featured actor's FeatureAuthorization, once it accepted and the stamp checked out. */
  stamp: string | null;
  created_at: number;
  updated_at: number;
}

/** A consent stamp (FeatureAuthorization) this union issued, or was asked for (see migrations/0031). */
export interface FeatureStampsTable {
  /** Names the stamp: /u/<slug>/stamps/<id>. */
  id: string;
  union_id: string;
  request_id: string;
  requester: string;
  collection: string;
  /** `pending`, `accepted`, `rejected` or `withdrawn`. */
  state: string;
  decided_by: string | null;
  created_at: number;
  updated_at: number;
}

export interface UnionRelationshipsTable {
  id: string;
  union_id: string;
  /** The other union's Group actor id. */
  peer_actor_id: string;
  peer_handle: string | null;
  /** What the peer is to this union: `ally`, `parent` or `chapter`. */
  kind: string;
  /** `outbound` (this union sent the Follow) or `inbound`. */
  direction: string;
  /** `offered`, `received`, `active`, `rejected` or `ended`. */
  state: string;
  /** Whose calls-to-action are relayed: `both`, `theirs`, `ours` or `none`. */
  relay: string;
  /** The Follow that carries the offer: Accept, Reject and Undo name it. */
  follow_id: string;
  created_at: number;
  updated_at: number;
}

export interface RelationshipEventsTable {
  id: Generated<number>;
  relationship_id: string;
  union_id: string;
  event: string;
  /** The state after the event. */
  state: string;
  /** Who caused it: `operator`, `member:<id>` or the peer's actor id. */
  by: string | null;
  at: number;
  /** The passed proposal that ratified this step (since 0029); each ratifies one step only. */
  proposal_id: string | null;
}

/** A member's response to a call this union relayed from an ally or parent (0029). */
export interface RelayedResponsesTable {
  id: string;
  union_id: string;
  note_id: string;
  member_id: string;
  /** `commit`, `comment` or `like`. */
  kind: string;
  source_id: string;
  created_at: number;
  undone_at: number | null;
}

/** A response to this union's call by a member of a partner that relayed it, counted here for that partner (0044). */
export interface PartnerCountedResponsesTable {
  id: string;
  union_id: string;
  action_id: string;
  /** The relaying union (ally or chapter) that said the actor is its member. */
  via_actor_id: string;
  actor_id: string;
  /** `commit`, `comment` or `like`. */
  kind: string;
  source_id: string;
  created_at: number;
  undone_at: number | null;
}

/** The latest totals a relaying union reported for one of this union's calls (0029). */
export interface RelayTalliesTable {
  union_id: string;
  action_id: string;
  reporter_actor_id: string;
  reporter_name: string | null;
  commitments: number;
  replies: number;
  likes: number;
  reported_at: number;
  received_at: number;
}

/** A chapter's latest report of itself and its subtree, as JSON (0029). */
export interface ChapterReportsTable {
  union_id: string;
  chapter_actor_id: string;
  report: string;
  reported_at: number;
  received_at: number;
}

export interface BlockedServersTable {
  host: string;
  reason: string | null;
  created_at: number;
}

export interface BylawsVersionsTable {
  union_id: string;
  version: number;
  text_md: string;
  /** JSON object of parameter values (amounts as strings). */
  params: string;
  /** `founding`, `migration`, `proposal` or `operator`. */
  source: string;
  proposal_id: string | null;
  /** The operator's reason for an override. */
  reason: string | null;
  created_at: number;
}

export interface ProposalsTable {
  id: string;
  union_id: string;
  number: number;
  /** `resolution`, `amendment`, `election`, `recall` or `spend`. */
  kind: string;
  title: string;
  text_md: string;
  /** JSON array of option texts. */
  options: string;
  multiple: number;
  /** JSON: what passing does. */
  change: string;
  bylaws_version: number;
  /** `open`, `passed` or `failed`. */
  state: string;
  opened_by: string | null;
  opened_at: number;
  closes_at: number;
  eligible_count: number;
  closed_at: number | null;
  /** JSON tally and reason, written at close. */
  outcome: string | null;
  /** End of the batch window whose tally Update is queued (ms), if any. */
  tally_due_at: number | null;
}

export interface BallotsTable {
  proposal_id: string;
  member_id: string;
  /** Index into the proposal's options. */
  option: number;
  source: string;
  source_id: string;
  cast_at: number;
}

export interface DelegationsTable {
  union_id: string;
  delegator_id: string;
  scope: string;
  delegate_id: string;
  created_at: number;
}

/** The distinct inboxes a union's fan-out reaches, kept by triggers (migration 0054). */
export interface FanoutTargetsTable {
  id: Generated<number>;
  union_id: string;
  /** Absolute: a shared inbox where the member's server has one, else the member's own. */
  inbox: string;
  /** Active members this inbox serves; a row at 0 is deleted. */
  members: number;
  /** 1 for a shared inbox (as first seen), 0 for a member's own. */
  shared: number;
}

/** PostgreSQL only (migration 0074): a union's active members per origin of their actor URLs, kept by triggers. */
export interface MemberOriginsTable {
  union_id: string;
  /** The actor URL up to the slash after its host, as URL.origin gives it. */
  origin: string;
  members: number;
}

export interface DB {
  fanout_targets: FanoutTargetsTable;
  member_origins: MemberOriginsTable;
  unions: UnionsTable;
  members: MembersTable;
  member_moves: MemberMovesTable;
  invites: InvitesTable;
  join_claims: JoinClaimsTable;
  actor_keys: ActorKeysTable;
  remote_actors: RemoteActorsTable;
  inbox_activities: InboxActivitiesTable;
  inbox_claims: InboxClaimsTable;
  instance_settings: InstanceSettingsTable;
  fedify_kv: FedifyKvTable;
  fedify_public_keys: FedifyPublicKeysTable;
  fedify_mq: FedifyMqTable;
  fedify_mq_dead: FedifyMqDeadTable;
  fedify_mq_done: FedifyMqDoneTable;
  fedify_mq_payloads: FedifyMqPayloadsTable;
  actions: ActionsTable;
  action_log: ActionLogTable;
  action_responses: ActionResponsesTable;
  action_committers: ActionCommittersTable;
  relay_requests: RelayRequestsTable;
  login_codes: LoginCodesTable;
  sessions: SessionsTable;
  rate_limit_hits: RateLimitHitsTable;
  union_relationships: UnionRelationshipsTable;
  featured_items: FeaturedItemsTable;
  feature_stamps: FeatureStampsTable;
  document_versions: DocumentVersionsTable;
  relationship_events: RelationshipEventsTable;
  relayed_responses: RelayedResponsesTable;
  relay_tallies: RelayTalliesTable;
  partner_counted_responses: PartnerCountedResponsesTable;
  chapter_reports: ChapterReportsTable;
  blocked_servers: BlockedServersTable;
  bylaws_versions: BylawsVersionsTable;
  proposals: ProposalsTable;
  ballots: BallotsTable;
  delegations: DelegationsTable;
  ledger_accounts: LedgerAccountsTable;
  ledger_transactions: LedgerTransactionsTable;
  ledger_address_signatures: LedgerAddressSignaturesTable;
  ledger_blockhashes: LedgerBlockhashesTable;
  ledger_state: LedgerStateTable;
  dues_payments: DuesPaymentsTable;
  dues_references: DuesReferencesTable;
  treasuries: TreasuriesTable;
  treasury_keys: TreasuryKeysTable;
  member_wallets: MemberWalletsTable;
  badge_mints: BadgeMintsTable;
  badges: BadgesTable;
  scan_cursors: ScanCursorsTable;
  crowdfunds: CrowdfundsTable;
  crowdfund_pledges: CrowdfundPledgesTable;
  crowdfund_transactions: CrowdfundTransactionsTable;
  treasury_setups: TreasurySetupsTable;
  treasury_transfers: TreasuryTransfersTable;
  treasury_moves: TreasuryMovesTable;
  treasury_spends: TreasurySpendsTable;
  role_badge_mints: RoleBadgeMintsTable;
  role_badges: RoleBadgesTable;
  wallet_challenges: WalletChallengesTable;
  member_standing: MemberStandingTable;
  standing_changes: StandingChangesTable;
  job_leases: JobLeasesTable;
  chain_anchors: ChainAnchorsTable;
}

// Amounts (lamports, token base units) are u64 decimal strings: exact on both
// dialects and never passed through the INT8-to-number parser.

/** The embedded ledger's accounts (litesvm keeps them in memory only). */
export interface LedgerAccountsTable {
  address: string;
  lamports: string;
  owner: string;
  executable: number;
  rent_epoch: string;
  /** Base64. */
  data: string;
  updated_slot: number;
}

/** Every transaction the embedded ledger executed, with its signed bytes. */
export interface LedgerTransactionsTable {
  id: Generated<number>;
  signature: string;
  slot: number;
  /** Unix seconds, as Solana reports block times. */
  block_time: number;
  /** The signed transaction, base64. */
  raw: string;
  /** JSON of the TransactionError, null on success. */
  err: string | null;
  /** JSON array of log lines. */
  logs: string;
  fee: string;
  units: string;
  /** JSON arrays of decimal strings / RPC token balance objects. */
  pre_balances: string;
  post_balances: string;
  pre_token_balances: string;
  post_token_balances: string;
}

export interface LedgerAddressSignaturesTable {
  address: string;
  tx_id: number;
}

export interface LedgerBlockhashesTable {
  blockhash: string;
  slot: number;
  /** How many rotations produced it (litesvm's blockhashes are a fixed chain). */
  n: number;
}

export interface LedgerStateTable {
  key: string;
  value: string;
}

/** A dues payment seen on-chain, once per signature. */
export interface DuesPaymentsTable {
  signature: string;
  union_id: string;
  member_id: string | null;
  payer: string;
  mint: string;
  amount: string;
  reference: string | null;
  /** `credited` or `unmatched`. */
  status: string;
  reason: string | null;
  paid_at: number;
  recorded_at: number;
}

export interface TreasuriesTable {
  union_id: string;
  mint: string;
  token_program: string;
  decimals: number;
  authority: string;
  token_account: string;
  threshold: number;
  /** JSON array of signer addresses. */
  signers: string;
  created_at: number;
}

/** How far a scanner has read an address's history (newest signature seen). */
export interface ScanCursorsTable {
  name: string;
  signature: string;
}

/** A union's treasury key (base64 64-byte secret): never logged or served. */
export interface TreasuryKeysTable {
  union_id: string;
  public_key: string;
  secret_key: string;
  created_at: number;
}

export interface MemberWalletsTable {
  union_id: string;
  member_id: string;
  address: string;
  linked_at: number;
  /** The signed challenge proving the wallet is the member's; null when the operator linked it without proof. */
  proof_message: string | null;
  proof_signature: string | null;
}

export interface TreasurySetupsTable {
  union_id: string;
  raw: string;
  last_valid_block_height: number;
  /** The Treasury (src/treasury/treasury.ts) the transaction creates, as JSON. */
  treasury: string;
  created_at: number;
}

export interface TreasuryTransfersTable {
  id: Generated<number>;
  union_id: string;
  destination: string;
  amount: string;
  memo: string | null;
  nonce_account: string;
  message: string;
  /** JSON list of the signer addresses the message names. */
  required: string;
  /** JSON object: signer address to base58 signature. */
  signatures: string;
  state: string;
  signature: string | null;
  reason: string | null;
  created_at: number;
  updated_at: number;
}

/** A passed spend proposal carried out by the treasury (migrations/0045). */
export interface TreasurySpendsTable {
  proposal_id: string;
  union_id: string;
  number: number;
  /** queued, transfer (transfer_id pays it), refused (reason says why). */
  state: string;
  transfer_id: number | null;
  reason: string | null;
  created_at: number;
  updated_at: number;
}

export interface WalletChallengesTable {
  nonce: string;
  union_id: string;
  member_id: string;
  message: string;
  expires_at: number;
  used_at: number | null;
}

export interface BadgeMintsTable {
  union_id: string;
  mint: string;
  /** Set once the creation is seen on-chain. */
  signature: string | null;
  /** Signed creation (base64) awaiting confirmation. */
  raw: string | null;
  last_valid_block_height: number | null;
  created_at: number;
}

export interface BadgesTable {
  union_id: string;
  member_id: string;
  wallet: string;
  /** "minted" | "burned" | "pending_mint" | "pending_burn" */
  state: string;
  signature: string | null;
  raw: string | null;
  last_valid_block_height: number | null;
  updated_at: number;
}

/** A member's project raised through the union (src/crowdfunds/). */
export interface CrowdfundsTable {
  id: string;
  union_id: string;
  seq: number;
  title: string;
  body_md: string;
  body_html: string;
  /** u64 base units of the dues mint. */
  goal: string;
  deadline: number;
  beneficiary: string;
  proposer_id: string | null;
  state: string;
  cut_bps: number | null;
  mint: string | null;
  vault: string | null;
  reference: string | null;
  vault_raw: string | null;
  vault_last_valid_block_height: number | null;
  vault_signature: string | null;
  action_id: string | null;
  decided_by: string | null;
  decision_note: string | null;
  /** The passed resolution that approved it, under the crowdfundApproval bylaw member_vote (migrations/0045). */
  approved_by_proposal: string | null;
  total: string | null;
  cut: string | null;
  created_at: number;
  decided_at: number | null;
  settled_at: number | null;
}

export interface CrowdfundPledgesTable {
  signature: string;
  union_id: string;
  crowdfund_id: string;
  member_id: string | null;
  memo: string | null;
  wallet: string;
  source: string;
  destination: string;
  mint: string;
  amount: string;
  status: string;
  reason: string | null;
  in_vault: number;
  refund_signature: string | null;
  /** Why the refund could not reach `source` (migration 0042); the tokens went to the treasury, held for the pledger. */
  refund_failure: string | null;
  pledged_at: number;
  recorded_at: number;
}

export interface CrowdfundTransactionsTable {
  id: Generated<number>;
  crowdfund_id: string;
  kind: string;
  raw: string;
  last_valid_block_height: number;
  signature: string;
  state: string;
  pledges: string;
  amount: string;
  created_at: number;
  confirmed_at: number | null;
  /** The co-signed treasury transaction (treasury_transfers) carrying it, when officers must sign (migrations/0040). */
  transfer_id: number | null;
}

/** A member's standing as last computed ("good" | "grace" | "lapsed"). */
export interface MemberStandingTable {
  union_id: string;
  member_id: string;
  standing: string;
  paid_through: number | null;
  changed_at: number;
}

/** Each change of a member's standing, recorded once. */
export interface StandingChangesTable {
  id: Generated<number>;
  union_id: string;
  member_id: string;
  from_standing: string | null;
  to_standing: string;
  /** "payment" | "time" | "membership" | "dues" */
  reason: string;
  at: number;
}

export interface JobLeasesTable {
  name: string;
  holder: string;
  expires_at: number;
}

/** A union's call-to-action chain head written on-chain in a Memo, once a day. */
export interface ChainAnchorsTable {
  union_id: string;
  /** The union's local date, YYYY-MM-DD. */
  day: string;
  n: number;
  head: string;
  memo: string;
  signature: string | null;
  explorer_url: string | null;
  raw: string | null;
  last_valid_block_height: number | null;
  created_at: number;
  anchored_at: number | null;
}

/** A treasury moved to a new multisig (migrations/0041). */
export interface TreasuryMovesTable {
  id: Generated<number>;
  union_id: string;
  from_authority: string;
  from_token_account: string;
  from_threshold: number;
  from_signers: string;
  to_authority: string;
  to_token_account: string;
  to_threshold: number;
  to_signers: string;
  setup_raw: string;
  setup_last_valid_block_height: number;
  transfer_id: number | null;
  amount: string | null;
  state: string;
  signature: string | null;
  created_at: number;
  updated_at: number;
}

/** A union's soulbound badge mint for a role (migrations/0041). */
export interface RoleBadgeMintsTable {
  union_id: string;
  /** `leader` or `officer`. */
  role: string;
  mint: string;
  signature: string | null;
  raw: string | null;
  last_valid_block_height: number | null;
  created_at: number;
}

/** A member's role badge (migrations/0041). */
export interface RoleBadgesTable {
  union_id: string;
  member_id: string;
  role: string;
  wallet: string;
  state: string;
  signature: string | null;
  raw: string | null;
  last_valid_block_height: number | null;
  updated_at: number;
}

/** A Solana Pay reference key issued with a dues transaction (migration 0043). */
export interface DuesReferencesTable {
  reference: string;
  union_id: string;
  member_id: string;
  payer: string;
  amount: string;
  mint: string;
  destination: string;
  issued_at: number;
  expires_at: number;
  state: string;
  signature: string | null;
}
