// What the console knows, in one place, and the one place that changes it. The views never
// change it: they are told what changed (a Change) and redraw that part. The controller feeds it
// from the REST API and the events.
//
// A transcript is a Map from position to message: positions are gapless and unique per
// conversation, so a message seen twice (an event replayed, a refetch after EventsLost, the send
// answer and its event) is kept once, and the view orders by position whatever the arrival.

import type { StreamStatus } from "./socket";
import type { Agent, AgentState, Interaction, JsonObject, Message, ParticipantRole } from "./types";
import { t } from "./strings";

export interface Conversation {
  id: string;
  interaction: Interaction;
  /// The customer's nickname, kept once known: it leaves the participants when the chat ends.
  customerName: string;
  messages: Map<number, Message>;
  /// The whole transcript has been read at least once (a list or an event gives only news).
  loaded: boolean;
  unread: number;
  /// In the agent's own list (a tab). A supervisor's preview of someone else's chat is not.
  mine: boolean;
  /// The agent's part now; undefined when not (or no longer) in the conversation.
  role: ParticipantRole | undefined;
  /// Every participant id the agent had here (each role is a new participant): whose
  /// messages are "You".
  myParticipantIds: Set<string>;
  typing: { nickname: string; until: number } | undefined;
  draft: string;
  note: boolean;
  /// The last send that failed, to retry with the same messageId (stored once by nexus).
  pending: { text: string; messageId: string; notice: boolean } | undefined;
}

export interface Invitation {
  interaction: Interaction;
  customerName: string;
  receivedAt: number;
}

export type Change =
  | { kind: "agent" }
  | { kind: "connection" }
  | { kind: "invitations" }
  | { kind: "list" }
  | { kind: "selected" }
  | { kind: "conversation"; id: string }
  | { kind: "messages"; id: string; added: Message[] }
  | { kind: "typing"; id: string }
  | { kind: "tenant" };

/// How long a "typing" lasts unless refreshed (nexus keeps typing 10 s).
const TYPING_MS = 10_000;

export function customerOf(interaction: Interaction): string | undefined {
  const customer = interaction.participants.find((p) => p.type === "Customer");
  if (customer?.nickname) return customer.nickname;
  const data = interaction.userData;
  for (const key of ["nickname", "firstName", "name"]) {
    const value = data[key];
    if (typeof value === "string" && value) return value;
  }
  return undefined;
}

export class Store {
  agent: Agent | undefined;
  connection: StreamStatus = "connecting";
  readonly invitations = new Map<string, Invitation>();
  readonly conversations = new Map<string, Conversation>();
  selectedId: string | undefined;
  /// A supervisor's list of every open chat of the tenant (`scope=tenant`).
  tenant: Interaction[] = [];
  private readonly listeners = new Set<(change: Change) => void>();

  on(listener: (change: Change) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(change: Change): void {
    for (const listener of this.listeners) listener(change);
  }

  get isSupervisor(): boolean {
    return this.agent?.role === "supervisor";
  }

  get selected(): Conversation | undefined {
    return this.selectedId ? this.conversations.get(this.selectedId) : undefined;
  }

  /// The agent's own conversations, oldest first (the order nexus lists them in).
  get mine(): Conversation[] {
    return [...this.conversations.values()]
      .filter((c) => c.mine)
      .sort((a, b) => a.interaction.createdAt.localeCompare(b.interaction.createdAt));
  }

  setAgent(agent: Agent): void {
    this.agent = agent;
    this.emit({ kind: "agent" });
  }

  setAgentState(state: AgentState, reason?: string): void {
    if (!this.agent) return;
    this.agent = { ...this.agent, state, stateReason: reason ?? undefined };
    this.emit({ kind: "agent" });
  }

  setConnection(status: StreamStatus): void {
    if (this.connection === status) return;
    this.connection = status;
    this.emit({ kind: "connection" });
  }

  // --- Invitations -----------------------------------------------------------------------------

  addInvitation(interaction: Interaction): Invitation {
    const known = this.conversations.get(interaction.id)?.customerName;
    const invitation: Invitation = {
      interaction,
      customerName: customerOf(interaction) ?? known ?? t.customer,
      receivedAt: Date.now(),
    };
    this.invitations.set(interaction.id, invitation);
    this.emit({ kind: "invitations" });
    return invitation;
  }

  removeInvitation(id: string): Invitation | undefined {
    const invitation = this.invitations.get(id);
    if (invitation) {
      this.invitations.delete(id);
      this.emit({ kind: "invitations" });
    }
    return invitation;
  }

  // --- Conversations ---------------------------------------------------------------------------

  private roleIn(interaction: Interaction): ParticipantRole | undefined {
    const me = this.agent?.id;
    return interaction.participants.find((p) => me !== undefined && p.agentId === me)?.role;
  }

  /// Adds or refreshes a conversation from an interaction (a list, an event, an answer).
  upsert(interaction: Interaction, mine: boolean): Conversation {
    let conversation = this.conversations.get(interaction.id);
    const isNew = !conversation;
    if (!conversation) {
      conversation = {
        id: interaction.id,
        interaction,
        customerName: customerOf(interaction) ?? t.customer,
        messages: new Map(),
        loaded: false,
        unread: 0,
        mine,
        role: undefined,
        myParticipantIds: new Set(),
        typing: undefined,
        draft: "",
        note: false,
        pending: undefined,
      };
      this.conversations.set(interaction.id, conversation);
    } else {
      // Events carry capabilities and workState; a later list read does not: keep them.
      conversation.interaction = {
        ...interaction,
        workState: interaction.workState ?? conversation.interaction.workState,
        capabilities: interaction.capabilities ?? conversation.interaction.capabilities,
      };
      const name = customerOf(interaction);
      if (name) conversation.customerName = name;
      conversation.mine = conversation.mine || mine;
    }
    conversation.role = this.roleIn(interaction);
    for (const p of interaction.participants) {
      if (p.agentId && p.agentId === this.agent?.id) conversation.myParticipantIds.add(p.participantId);
    }
    this.emit(isNew ? { kind: "list" } : { kind: "conversation", id: interaction.id });
    if (!isNew) this.emit({ kind: "list" });
    return conversation;
  }

  remove(id: string): void {
    const had = this.conversations.delete(id);
    if (this.selectedId === id) {
      this.selectedId = undefined;
      this.emit({ kind: "selected" });
    }
    if (had) this.emit({ kind: "list" });
  }

  /// Keeps only the agent's conversations the server lists now (after a resync), and the
  /// preview a supervisor is looking at.
  retain(ids: Set<string>): void {
    for (const [id, conversation] of this.conversations) {
      if (ids.has(id)) continue;
      if (!conversation.mine && id === this.selectedId) continue;
      this.remove(id);
    }
    for (const id of [...this.invitations.keys()]) if (!ids.has(id)) this.removeInvitation(id);
  }

  select(id: string | undefined): void {
    this.selectedId = id;
    const conversation = id ? this.conversations.get(id) : undefined;
    if (conversation && conversation.unread) {
      conversation.unread = 0;
      this.emit({ kind: "list" });
    }
    // A preview no longer looked at is dropped: it gets no events to stay true.
    for (const [other, c] of this.conversations) if (!c.mine && other !== id) this.conversations.delete(other);
    this.emit({ kind: "selected" });
  }

  isMine(conversation: Conversation, message: Message): boolean {
    const from = message.from;
    if (from.participantId && conversation.myParticipantIds.has(from.participantId)) return true;
    return (from.type === "Agent" || from.type === "Supervisor") && !!this.agent && from.nickname === this.agent.nickname && !from.participantId;
  }

  /// Adds messages (each position once); `news` counts them as unread when not looked at.
  addMessages(id: string, messages: Message[], news: boolean): void {
    const conversation = this.conversations.get(id);
    if (!conversation) return;
    const added: Message[] = [];
    let changed = false;
    for (const message of messages) {
      if (conversation.messages.has(message.position)) continue;
      conversation.messages.set(message.position, message);
      added.push(message);
      const mine = this.isMine(conversation, message);
      if (news && !mine && id !== this.selectedId && message.type !== "UserDataUpdated") conversation.unread += 1;
      if (message.from.type === "Customer") {
        if (message.from.nickname && message.type !== "ParticipantLeft") conversation.customerName = message.from.nickname;
        if (conversation.typing && message.type === "Text") {
          conversation.typing = undefined;
          this.emit({ kind: "typing", id });
        }
      }
      if (message.type === "ChatEnded" && conversation.interaction.state !== "ended") {
        conversation.interaction = { ...conversation.interaction, state: "ended" };
        changed = true;
      }
      if (message.type === "ParticipantLeft" && mine && conversation.role) {
        conversation.role = undefined;
        changed = true;
      }
    }
    if (!added.length) return;
    added.sort((a, b) => a.position - b.position);
    this.emit({ kind: "messages", id, added });
    if (changed) this.emit({ kind: "conversation", id });
    if (news) this.emit({ kind: "list" });
  }

  markLoaded(id: string): void {
    const conversation = this.conversations.get(id);
    if (conversation && !conversation.loaded) {
      conversation.loaded = true;
      this.emit({ kind: "conversation", id });
    }
  }

  setRole(id: string, role: ParticipantRole | undefined): void {
    const conversation = this.conversations.get(id);
    if (!conversation) return;
    conversation.role = role;
    this.emit({ kind: "conversation", id });
    this.emit({ kind: "list" });
  }

  setUserData(id: string, userData: JsonObject): void {
    const conversation = this.conversations.get(id);
    if (!conversation) return;
    conversation.interaction = { ...conversation.interaction, userData };
    this.emit({ kind: "conversation", id });
  }

  setTyping(id: string, nickname: string, typing: boolean): void {
    const conversation = this.conversations.get(id);
    if (!conversation) return;
    conversation.typing = typing ? { nickname: nickname || conversation.customerName, until: Date.now() + TYPING_MS } : undefined;
    this.emit({ kind: "typing", id });
  }

  /// Drops typing indicators that were not refreshed in time.
  expireTyping(now: number): void {
    for (const conversation of this.conversations.values()) {
      if (conversation.typing && conversation.typing.until <= now) {
        conversation.typing = undefined;
        this.emit({ kind: "typing", id: conversation.id });
      }
    }
  }

  setTenant(list: Interaction[]): void {
    this.tenant = list;
    this.emit({ kind: "tenant" });
  }

  clearUnread(id: string): void {
    const conversation = this.conversations.get(id);
    if (conversation?.unread) {
      conversation.unread = 0;
      this.emit({ kind: "list" });
    }
  }
}
