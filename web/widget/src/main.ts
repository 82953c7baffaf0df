/**
 * The nexus web chat widget: one script a site embeds with
 *
 *   <script src="https://NEXUS/widget/nexus-chat.js" data-nexus-url="https://NEXUS"
 *           data-api-key="nxk_..." data-endpoint="web"></script>
 *
 * Options (data- attributes of that script element): data-nexus-url (default: the script's
 * origin), data-api-key (a chat key; required), data-endpoint (the chat channel's name),
 * data-title, data-language (en, es; default from the browser), data-prechat-fields (a comma
 * list: phoneNumber, subject, or any other name, which goes into userData), data-primary-color,
 * data-position (right, left), data-transport (auto, socket, long-poll).
 *
 * JS API: window.NexusChat.open(), .close(), .end() (a Promise; no confirmation step), and
 * window.NexusChat.onEvent = (event) => ... with event.type one of opened, minimised,
 * started, message (event.message), ended.
 *
 * Modules: api (REST calls), transport (socket or long-poll, reconnects), store (localStorage,
 * the conversation by position), controller (behaviour), view and render (DOM), strings
 * (every visible text, en and es), styles, dom (helpers), config (options).
 *
 * What tests can rely on (English names; the shadow root is open, so getByRole pierces it):
 * - button "Open chat" — the launcher; with unread messages its name is "Open chat (N unread)"
 *   and a badge shows N. It is hidden while the panel is open.
 * - dialog "Chat with us" (or data-title) — the panel, not modal, inside region "Chat".
 *   Header buttons: "Download transcript" (shown once there is a message), "End chat" (while
 *   the chat is live), "Minimise chat". Escape minimises and focus returns to the launcher.
 * - Pre-chat form: textboxes "Name" (required), "Email", and the extra fields ("Phone number",
 *   "Subject", others by their name in words: orderNumber -> "Order number"); button
 *   "Start chat". Field errors are in each field's description; a refusal is role="alert".
 * - log "Conversation" (aria-live polite): messages; each shows the nickname and the time;
 *   system lines read "Ann joined the chat", "Ann left the chat", "The chat ended". Messages
 *   not yet sent follow, with "Sending…" or "Not sent yet: it will be sent when the connection
 *   is back", and a failed one has buttons "Retry" and "Remove". A file is a button
 *   "Download <filename> (<size>)".
 * - status "Chat status": "You are number 2 in the queue", "Connection lost. Reconnecting…",
 *   "You are offline. …".
 * - group "Suggested replies": a bot's quick replies, buttons named by their text.
 * - status "Typing": "Ann is typing…" (empty when nobody is).
 * - textbox "Message" (Enter sends, Shift+Enter is a new line), button "Send", and the file
 *   input labelled "Attach a file" (use setInputFiles on it). Refused files and failed
 *   downloads are said in role="alert".
 * - End: "End chat", then the group "End this chat?" with buttons "Yes, end the chat" and
 *   "Cancel". After the end: "This chat has ended." (or "This chat is no longer available.")
 *   and button "Start a new chat".
 * The host element is <nexus-chat> appended to body; its shadowRoot holds everything.
 */

import { findScript, readOptions } from "./config";
import { Controller, type NexusChatEvent } from "./controller";
import { applyStyles } from "./styles";

export interface NexusChatApi {
  open(): void;
  close(): void;
  end(): Promise<void>;
  onEvent?: (event: NexusChatEvent) => void;
}

declare global {
  interface Window {
    NexusChat?: NexusChatApi;
  }
}

// Found now: document.currentScript is only set while this script first runs.
const script = findScript();

function boot(): void {
  // Embedded twice (a site template and a tag manager): one widget.
  if (window.NexusChat) return;
  const options = readOptions(script);
  if (!options) {
    console.error("nexus chat: the widget's <script> needs data-api-key (and data-nexus-url)");
    return;
  }
  const host = document.createElement("nexus-chat");
  const shadow = host.attachShadow({ mode: "open" });
  applyStyles(shadow);
  document.body.appendChild(host);
  const api: NexusChatApi = {
    open: () => controller.open(),
    close: () => controller.close(),
    end: () => controller.end(),
  };
  // The site's hook is called after the widget's own work, and its errors stay its own.
  const emit = (event: NexusChatEvent) => {
    try {
      api.onEvent?.(event);
    } catch (error) {
      console.error("nexus chat: onEvent", error);
    }
  };
  const controller = new Controller(options, shadow, emit);
  window.NexusChat = api;
  controller.init();
}

if (document.body) boot();
else document.addEventListener("DOMContentLoaded", boot, { once: true });
