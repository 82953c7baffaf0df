// The Workspace API's objects (openapi/workspace.json), and parsers that turn the untyped JSON
// the server sends into them. The server is ours, but a message's text, a nickname or user data
// come from customers and bots: the parsers never trust a field to have the type it should, and
// fall back to a harmless default instead of crashing the console.

export type JsonObject = Record<string, unknown>;

export type AgentState = "ready" | "not_ready" | "logged_out";
export type AgentRole = "agent" | "supervisor";
export type SenderType = "Customer" | "Agent" | "Bot" | "Supervisor" | "System";
export type Visibility = "All" | "Agent" | "Supervisor";
/// A participant's part in a conversation (WorkParticipant.role).
export type ParticipantRole = "primary" | "conference" | "consult" | "monitor" | "coach" | "barge";
export type AfterAction = "KeepAlive" | "CloseIfNoAgents" | "ForceClose";
export type SuperviseMode = "monitor" | "coach" | "barge-in";
export type RoutingState = "none" | "queued" | "invited" | "assigned" | "idle" | "done";

export interface Agent {
  id: string;
  username: string;
  nickname: string;
  role: AgentRole;
  state: AgentState;
  stateReason?: string;
}

/// A file named in a message's `data.media` (nexus_media_json).
export interface MediaFile {
  mediaId: string;
  filename: string;
  mimetype: string;
  length: number;
}

export interface Sender {
  participantId?: string;
  type: SenderType;
  nickname: string;
}

export interface Message {
  position: number;
  /// Text, CustomNotice, PushUrl, ParticipantJoined, ParticipantLeft, UserDataUpdated, ChatEnded.
  type: string;
  from: Sender;
  text?: string;
  visibility: Visibility;
  deliveryStatus: string;
  timestamp: string;
  /// `data.media`: files a customer sent.
  media: MediaFile[];
  /// `data.options`: a bot's quick replies.
  options: string[];
}

export interface Participant {
  participantId: string;
  type: SenderType;
  nickname: string;
  agentId?: string;
  role?: ParticipantRole;
}

export interface Interaction {
  id: string;
  state: "active" | "ended";
  userData: JsonObject;
  messageCount: number;
  createdAt: string;
  lastActivityAt: string;
  endedReason?: string;
  routingState: RoutingState;
  queue?: string;
  participants: Participant[];
  /// In events only: this agent's part (Invited, Accepted, Joined).
  workState?: string;
  /// In events only: the operations open to the agent now.
  capabilities?: string[];
  /// Not sent by nexus today (see the report): an invitation's time to answer, for a countdown.
  inviteTimeoutSeconds?: number;
}

export interface Targets {
  agents: { id: string; nickname: string; role: AgentRole; state: string }[];
  queues: string[];
}

/// What the desktop's events say, by kind. `seq` is the agent's event number (absent only on
/// the typing event, which nexus does not send today).
export type DesktopEvent =
  | { kind: "invited"; seq: number; interaction: Interaction }
  | { kind: "revoked"; seq: number; id: string }
  | { kind: "status"; seq: number; interaction: Interaction; role?: string }
  | { kind: "completed"; seq: number; id: string }
  | { kind: "transferred"; seq: number; id: string; to?: string; queue?: string }
  | { kind: "messages"; seq: number; id: string; messages: Message[] }
  | { kind: "agentState"; seq: number; state: AgentState; reason?: string }
  | { kind: "typing"; seq?: number; id: string; nickname: string; senderType: string; typing: boolean }
  | { kind: "unknown"; seq: number };

/// One frame of the desktop socket.
export type SocketFrame =
  | { kind: "connected"; nickname: string; state: AgentState }
  | { kind: "lost" }
  | { kind: "pong" }
  | { kind: "event"; event: DesktopEvent }
  | { kind: "ignored" };

// ---------------------------------------------------------------------------------------------
// Small readers of untyped JSON.

export function asObject(value: unknown): JsonObject | undefined {
  return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as JsonObject) : undefined;
}

function str(value: unknown, fallback = ""): string {
  return typeof value === "string" ? value : fallback;
}

function optStr(value: unknown): string | undefined {
  return typeof value === "string" ? value : undefined;
}

function num(value: unknown, fallback = 0): number {
  return typeof value === "number" && Number.isFinite(value) ? value : fallback;
}

function list(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

function oneOf<T extends string>(value: unknown, allowed: readonly T[], fallback: T): T {
  return allowed.find((a) => a === value) ?? fallback;
}

const SENDER_TYPES = ["Customer", "Agent", "Bot", "Supervisor", "System"] as const;
const VISIBILITIES = ["All", "Agent", "Supervisor"] as const;
const AGENT_STATES = ["ready", "not_ready", "logged_out"] as const;
const ROLES = ["primary", "conference", "consult", "monitor", "coach", "barge"] as const;
const ROUTING_STATES = ["none", "queued", "invited", "assigned", "idle", "done"] as const;

export function parseAgentState(value: unknown): AgentState {
  return oneOf(value, AGENT_STATES, "not_ready");
}

export function parseAgent(value: unknown): Agent {
  const o = asObject(value) ?? {};
  return {
    id: str(o.id),
    username: str(o.username),
    nickname: str(o.nickname) || str(o.username),
    role: o.role === "supervisor" ? "supervisor" : "agent",
    state: parseAgentState(o.state),
    stateReason: optStr(o.stateReason),
  };
}

function parseMedia(value: unknown): MediaFile[] {
  const files: MediaFile[] = [];
  for (const item of list(value)) {
    const o = asObject(item);
    const mediaId = o ? str(o.mediaId) : "";
    if (!o || !mediaId) continue;
    files.push({ mediaId, filename: str(o.filename, "file"), mimetype: str(o.mimetype), length: num(o.length) });
  }
  return files;
}

export function parseMessage(value: unknown): Message | undefined {
  const o = asObject(value);
  const position = o ? num(o.position, -1) : -1;
  if (!o || position < 1) return undefined;
  const from = asObject(o.from) ?? {};
  const data = asObject(o.data) ?? {};
  return {
    position,
    type: str(o.type, "Text"),
    from: {
      participantId: optStr(from.participantId),
      type: oneOf(from.type, SENDER_TYPES, "System"),
      nickname: str(from.nickname),
    },
    text: optStr(o.text),
    visibility: oneOf(o.visibility, VISIBILITIES, "All"),
    deliveryStatus: str(o.deliveryStatus),
    timestamp: str(o.timestamp),
    media: parseMedia(data.media),
    options: list(data.options).filter((x): x is string => typeof x === "string"),
  };
}

export function parseMessages(value: unknown): Message[] {
  return list(value)
    .map(parseMessage)
    .filter((m): m is Message => m !== undefined);
}

function parseParticipant(value: unknown): Participant | undefined {
  const o = asObject(value);
  if (!o) return undefined;
  return {
    participantId: str(o.participantId),
    type: oneOf(o.type, SENDER_TYPES, "System"),
    nickname: str(o.nickname),
    agentId: optStr(o.agentId),
    role: typeof o.role === "string" ? oneOf(o.role, ROLES, "primary") : undefined,
  };
}

export function parseInteraction(value: unknown): Interaction | undefined {
  const o = asObject(value);
  const id = o ? str(o.id) : "";
  if (!o || !id) return undefined;
  const timeout = num(o.inviteTimeoutSeconds, -1);
  return {
    id,
    state: o.state === "ended" ? "ended" : "active",
    userData: asObject(o.userData) ?? {},
    messageCount: num(o.messageCount),
    createdAt: str(o.createdAt),
    lastActivityAt: str(o.lastActivityAt),
    endedReason: optStr(o.endedReason),
    routingState: oneOf(o.routingState, ROUTING_STATES, "none"),
    queue: optStr(o.queue),
    participants: list(o.participants)
      .map(parseParticipant)
      .filter((p): p is Participant => p !== undefined),
    workState: optStr(o.workState),
    capabilities: Array.isArray(o.capabilities)
      ? o.capabilities.filter((c): c is string => typeof c === "string")
      : undefined,
    inviteTimeoutSeconds: timeout >= 0 ? timeout : undefined,
  };
}

export function parseInteractions(value: unknown): Interaction[] {
  return list(value)
    .map(parseInteraction)
    .filter((i): i is Interaction => i !== undefined);
}

export function parseTargets(value: unknown): Targets {
  const o = asObject(value) ?? {};
  return {
    agents: list(o.agents).flatMap((a) => {
      const agent = asObject(a);
      const id = agent ? str(agent.id) : "";
      if (!agent || !id) return [];
      return [
        {
          id,
          nickname: str(agent.nickname) || str(agent.username),
          role: agent.role === "supervisor" ? ("supervisor" as const) : ("agent" as const),
          state: str(agent.state),
        },
      ];
    }),
    queues: list(o.queues).flatMap((q) => {
      const name = str(asObject(q)?.name);
      return name ? [name] : [];
    }),
  };
}

/// An Event object (the socket's, or the long-poll's `data.events[]`).
export function parseEvent(value: unknown): DesktopEvent | undefined {
  const o = asObject(value);
  if (!o) return undefined;
  const seq = num(o.seq, 0);
  const type = o.messageType;
  // The typing event is the console's own proposal (see the report): nexus tells agents nothing
  // of a customer's typing today. It may come without a number, as live state.
  if (type === "Typing") {
    const id = str(o.interactionId);
    if (!id) return undefined;
    return {
      kind: "typing",
      seq: seq > 0 ? seq : undefined,
      id,
      nickname: str(o.nickname),
      senderType: str(o.participantType, "Customer"),
      typing: o.typing === true,
    };
  }
  if (seq < 1) return undefined;
  if (type === "AgentStateChanged") {
    return { kind: "agentState", seq, state: parseAgentState(o.state), reason: optStr(o.reason) };
  }
  if (type === "MessageLogUpdated") {
    const id = str(o.interactionId);
    return id ? { kind: "messages", seq, id, messages: parseMessages(o.messages) } : { kind: "unknown", seq };
  }
  if (type === "InteractionStateChanged") {
    const raw = asObject(o.interaction) ?? {};
    const id = str(raw.id) || str(o.interactionId);
    if (!id) return { kind: "unknown", seq };
    switch (o.notificationType) {
      case "Invited": {
        const interaction = parseInteraction(raw);
        return interaction ? { kind: "invited", seq, interaction } : { kind: "unknown", seq };
      }
      case "StatusChange": {
        const interaction = parseInteraction(raw);
        return interaction ? { kind: "status", seq, interaction, role: optStr(o.role) } : { kind: "unknown", seq };
      }
      case "Revoked":
        return { kind: "revoked", seq, id };
      case "Completed":
        return { kind: "completed", seq, id };
      case "Transferred":
        return { kind: "transferred", seq, id, to: optStr(o.to), queue: optStr(o.queue) };
      default:
        return { kind: "unknown", seq };
    }
  }
  return { kind: "unknown", seq };
}

export function parseFrame(text: string): SocketFrame {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { kind: "ignored" };
  }
  const o = asObject(value);
  if (!o) return { kind: "ignored" };
  switch (o.messageType) {
    case "Connected":
      return { kind: "connected", nickname: str(o.nickname), state: parseAgentState(o.state) };
    case "EventsLost":
      return { kind: "lost" };
    case "Pong":
      return { kind: "pong" };
    case "EventError":
      return { kind: "ignored" };
    default: {
      const event = parseEvent(o);
      return event ? { kind: "event", event } : { kind: "ignored" };
    }
  }
}
