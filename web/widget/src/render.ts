// One transcript message as DOM, and the plain-text transcript. Who said it decides the look:
// the customer's own on the right in the primary colour, agents grey, the bot blue, a
// supervisor amber; joins, leaves, the end and notices are centred system lines.

import { formatSize, h, linkify } from "./dom";
import { format, type Strings } from "./strings";
import { mediaOf, type Media, type Message } from "./types";

export interface RenderContext {
  s: Strings;
  lang: string;
  download(media: Media): void;
}

/** Messages that are no line of the conversation (user data changes only the agents see). */
const SILENT = new Set(["UserDataUpdated", "TypingStarted", "TypingStopped"]);

function time(timestamp: string, lang: string): HTMLTimeElement | null {
  const date = new Date(timestamp);
  if (Number.isNaN(date.getTime())) return null;
  return h("time", {
    datetime: timestamp,
    title: date.toLocaleString(lang),
    text: date.toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" }),
  });
}

function nickname(message: Message): string {
  return message.from?.nickname || message.from?.type || "";
}

/** The text of a system line, or null when the message is no line at all. */
export function systemText(message: Message, s: Strings): string | null {
  switch (message.type) {
    case "ParticipantJoined":
      return format(s.joined, { name: nickname(message) });
    case "ParticipantLeft":
      return format(s.left, { name: nickname(message) });
    case "ChatEnded":
      return s.chatEndedLine;
    case "Text":
      return message.from?.type === "System" ? message.text || null : null;
    default:
      return SILENT.has(message.type) ? null : message.text || null;
  }
}

/** Whether a message is something someone said (rather than a system line or nothing). */
export function isSaid(message: Message): boolean {
  return message.type === "Text" && message.from?.type !== "System";
}

/** The DOM of a message, or null for those not shown. */
export function messageNode(message: Message, ctx: RenderContext): HTMLElement | null {
  const { s, lang } = ctx;
  const when = time(message.timestamp, lang);
  if (!isSaid(message)) {
    const text = systemText(message, s);
    return text === null ? null : h("div", { class: "sys" }, text, when && " · ", when);
  }
  const kind = message.from.type;
  const look = kind === "Customer" ? "me" : kind === "Bot" ? "bot" : kind === "Supervisor" ? "sup" : "agent";
  const tag = kind === "Bot" ? s.bot : kind === "Supervisor" ? s.supervisor : "";
  const files = mediaOf(message);
  const text = message.text ?? "";
  // An upload without a caption has its file name as its text: the file's button says it.
  const showText = text && !(files.length === 1 && text === files[0].filename);
  return h(
    "div",
    { class: `msg ${look}` },
    h(
      "div",
      { class: "meta" },
      h("span", { class: "who", text: nickname(message) }),
      tag && h("span", { class: "tag", text: tag }),
      when && " · ",
      when,
    ),
    showText && h("div", { class: "bubble" }, ...linkify(text)),
    files.length > 0 &&
      h(
        "div",
        { class: "files" },
        ...files.map((file) =>
          h("button", {
            type: "button",
            text: format(s.downloadFile, { name: file.filename, size: formatSize(file.length) }),
            onclick: () => ctx.download(file),
          }),
        ),
      ),
  );
}

/** The conversation as plain text, one line per message, for the transcript download. */
export function transcriptText(title: string, messages: Message[], s: Strings, lang: string): string {
  const lines = [`${s.transcriptHeading}: ${title}`, new Date().toLocaleString(lang), ""];
  for (const message of messages) {
    const date = new Date(message.timestamp);
    const stamp = Number.isNaN(date.getTime()) ? "" : `[${date.toLocaleString(lang)}] `;
    if (!isSaid(message)) {
      const text = systemText(message, s);
      if (text !== null) lines.push(`${stamp}${text}`);
      continue;
    }
    const media = mediaOf(message);
    const files = media.map((f) => `[${s.file}: ${f.filename}, ${formatSize(f.length)}]`);
    const said = media.length === 1 && message.text === media[0].filename ? "" : message.text ?? "";
    // A message of several lines keeps them, indented under its first.
    const text = [said, ...files].filter(Boolean).join(" ").replace(/\r?\n/g, "\r\n    ");
    lines.push(`${stamp}${nickname(message)}: ${text}`);
  }
  return lines.join("\r\n") + "\r\n";
}
