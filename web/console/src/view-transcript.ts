// One transcript entry per message. Everything in a message (text, nicknames, file names,
// options) is untrusted and goes in as text; a PushUrl becomes a link only for http(s).
// Who speaks decides the look: the customer on the left, the agent's own words on the right,
// other agents and supervisors beside them, bots and the system apart; whispers (visibility
// Agent or Supervisor) are marked in words as well as in colour.

import { h, timeElement } from "./dom";
import { t } from "./strings";
import type { MediaFile, Message } from "./types";

export interface MessageContext {
  mine: boolean;
  download(file: MediaFile): void;
}

const EVENT_TYPES = new Set(["ParticipantJoined", "ParticipantLeft", "ChatEnded", "UserDataUpdated"]);

function eventText(message: Message): string {
  const name = message.from.nickname || t.customer;
  switch (message.type) {
    case "ParticipantJoined":
      return t.joined(name);
    case "ParticipantLeft":
      return t.leftChat(name);
    case "ChatEnded":
      return t.chatEnded;
    default:
      return message.text ? `${t.userDataUpdated}: ${message.text}` : t.userDataUpdated;
  }
}

/// Whom a whisper is for, in words: a message to agents is an internal note; a join or a leave
/// seen by agents only is just that.
function visibilityBadge(message: Message, event = false): HTMLElement | null {
  if (message.visibility === "Agent") return h("span", { class: "tag tag-note", text: event ? t.agentsOnly : t.internalNote });
  if (message.visibility === "Supervisor") return h("span", { class: "tag tag-supervisor", text: t.supervisorsOnly });
  return null;
}

function safeUrl(text: string | undefined): string | undefined {
  if (!text) return undefined;
  try {
    const url = new URL(text);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : undefined;
  } catch {
    return undefined;
  }
}

export function renderMessage(message: Message, context: MessageContext): HTMLLIElement {
  const senderClass = `from-${message.from.type.toLowerCase()}`;
  const visibilityClass = message.visibility === "All" ? "" : ` whisper vis-${message.visibility.toLowerCase()}`;

  if (EVENT_TYPES.has(message.type)) {
    return h(
      "li",
      { class: `entry event ${senderClass}${visibilityClass}`, attrs: { "data-position": message.position } },
      h("span", { class: "event-text", text: eventText(message) }),
      " ",
      visibilityBadge(message, true),
      " ",
      timeElement(message.timestamp),
    );
  }

  const author =
    context.mine ? t.you
    : message.from.nickname ? message.from.nickname
    : message.from.type === "Bot" ? t.botLabel
    : message.from.type === "System" ? t.systemLabel
    : t.customer;
  const kindLabel =
    message.from.type === "Bot" ? t.botLabel
    : message.from.type === "System" ? t.systemLabel
    : message.from.type === "Supervisor" ? t.supervisorBadge
    : null;

  const head = h(
    "p",
    { class: "entry-head" },
    h("span", { class: "author", text: author }),
    kindLabel && !context.mine ? h("span", { class: "tag tag-kind", text: kindLabel }) : null,
    message.type === "CustomNotice" ? h("span", { class: "tag tag-notice", text: t.customNotice }) : null,
    message.type === "PushUrl" ? h("span", { class: "tag tag-notice", text: t.pushedUrl }) : null,
    visibilityBadge(message),
    timeElement(message.timestamp),
  );

  const body: (HTMLElement | null)[] = [];
  if (message.type === "PushUrl") {
    const href = safeUrl(message.text);
    body.push(
      href
        ? h("p", { class: "entry-text" }, h("a", { text: message.text ?? href, attrs: { href, target: "_blank", rel: "noopener noreferrer" } }))
        : h("p", { class: "entry-text", text: message.text ?? "" }),
    );
  } else if (message.text) {
    body.push(h("p", { class: "entry-text", text: message.text }));
  }
  if (message.media.length) {
    body.push(
      h(
        "ul",
        { class: "files" },
        ...message.media.map((file) =>
          h(
            "li",
            {},
            h(
              "button",
              { class: "file", attrs: { type: "button" }, on: { click: () => context.download(file) } },
              h("span", { class: "file-icon", text: "⬇", attrs: { "aria-hidden": "true" } }),
              h("span", { class: "file-name", text: t.download(file.filename) }),
              file.length ? h("span", { class: "file-size", text: ` (${t.fileSize(file.length)})` }) : null,
            ),
          ),
        ),
      ),
    );
  }
  if (message.options.length) {
    body.push(
      h(
        "div",
        { class: "options" },
        h("span", { class: "options-label", text: `${t.quickReplies}:` }),
        h("ul", {}, ...message.options.map((option) => h("li", { class: "chip", text: option }))),
      ),
    );
  }
  if (message.deliveryStatus === "failed") body.push(h("p", { class: "delivery-failed", text: t.deliveryFailed }));

  const typeClass = message.type === "CustomNotice" || message.type === "PushUrl" ? " notice" : "";
  return h(
    "li",
    {
      class: `entry message ${senderClass}${context.mine ? " mine" : ""}${visibilityClass}${typeClass}`,
      attrs: { "data-position": message.position },
    },
    head,
    ...body,
  );
}
