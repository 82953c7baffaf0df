// The widget's DOM: a launcher and a panel in an open shadow root. It knows nothing of the API:
// it shows what the controller tells it and reports what the customer does through handlers.
//
// Accessibility: the panel is a non-modal dialog named by its title; the conversation is a
// polite live log; typing and connection/queue news are status regions; errors are alerts;
// every control has a name; focus moves into the panel on open and back to the launcher on
// minimise; Escape minimises (or cancels the end's confirmation first).

import { h, icon, icons } from "./dom";
import { format, type Strings } from "./strings";

export type Screen = "prechat" | "chat" | "ended";

export interface PrechatValues {
  name: string;
  email: string;
  /** The extra fields by name (phoneNumber, subject, or user data), filled ones only. */
  extra: Record<string, string>;
}

export interface PendingItem {
  id: string;
  text: string;
  state: "sending" | "waiting" | "failed";
  reason?: string;
}

export interface ViewHandlers {
  opened(): void;
  minimised(): void;
  start(values: PrechatValues): void;
  send(text: string): void;
  typed(text: string): void;
  attach(file: File): void;
  end(): void;
  newChat(): void;
  transcript(): void;
  reply(text: string): void;
  retry(id: string): void;
  remove(id: string): void;
}

interface FieldSpec {
  key: string;
  label: string;
  type: string;
  autocomplete?: string;
  required?: boolean;
}

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

/** "orderNumber" or "order_number" -> "Order number", for a site's own pre-chat fields. */
function humanise(name: string): string {
  const words = name.replace(/([a-z])([A-Z])/g, "$1 $2").replace(/[_-]+/g, " ").toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

export class View {
  private readonly root: HTMLDivElement;
  private readonly launcher: HTMLButtonElement;
  private readonly badge: HTMLSpanElement;
  private readonly panel: HTMLDivElement;
  private readonly transcriptButton: HTMLButtonElement;
  private readonly endButton: HTMLButtonElement;
  private readonly prechat: HTMLFormElement;
  private readonly inputs = new Map<string, { input: HTMLInputElement; error: HTMLElement }>();
  private readonly formError: HTMLElement;
  private readonly startButton: HTMLButtonElement;
  private readonly chat: HTMLDivElement;
  private readonly log: HTMLDivElement;
  private readonly messages: HTMLDivElement;
  private readonly outbox: HTMLDivElement;
  private readonly connection: HTMLParagraphElement;
  private readonly routing: HTMLParagraphElement;
  private readonly replies: HTMLDivElement;
  private readonly typing: HTMLDivElement;
  private readonly alertBox: HTMLDivElement;
  private readonly composer: HTMLFormElement;
  private readonly textarea: HTMLTextAreaElement;
  private readonly fileInput: HTMLInputElement;
  private readonly confirm: HTMLDivElement;
  private readonly confirmYes: HTMLButtonElement;
  private readonly endedBox: HTMLDivElement;
  private readonly endedText: HTMLParagraphElement;
  private readonly newChatButton: HTMLButtonElement;
  private alertTimer: ReturnType<typeof setTimeout> | undefined;
  screen: Screen = "prechat";
  isOpen = false;

  constructor(
    readonly shadow: ShadowRoot,
    private readonly s: Strings,
    title: string,
    fields: string[],
    left: boolean,
    private readonly on: ViewHandlers,
  ) {
    this.badge = h("span", { class: "badge", "aria-hidden": "true", hidden: true });
    this.launcher = h(
      "button",
      { type: "button", class: "launcher", "aria-label": s.openChat, onclick: () => this.open() },
      icon(icons.chat),
      this.badge,
    );

    const headButton = (label: string, path: string, onclick: () => void) =>
      h("button", { type: "button", class: "ib", "aria-label": label, title: label, onclick }, icon(path));
    this.transcriptButton = headButton(s.downloadTranscript, icons.download, () => on.transcript());
    this.transcriptButton.hidden = true;
    this.endButton = headButton(s.endChat, icons.end, () => this.askEnd());
    const head = h(
      "div",
      { class: "head" },
      h("h2", { id: "nx-title", text: title }),
      this.transcriptButton,
      this.endButton,
      headButton(s.minimise, icons.minimise, () => this.minimise()),
    );

    // The pre-chat form.
    const specs: FieldSpec[] = [
      { key: "name", label: s.name, type: "text", autocomplete: "name", required: true },
      { key: "email", label: s.email, type: "email", autocomplete: "email" },
      ...fields.map((key): FieldSpec => {
        if (key === "phoneNumber") return { key, label: s.phoneNumber, type: "tel", autocomplete: "tel" };
        if (key === "subject") return { key, label: s.subject, type: "text" };
        return { key, label: humanise(key), type: "text" };
      }),
    ];
    this.formError = h("div", { class: "ferr", role: "alert" });
    this.startButton = h("button", { type: "submit", class: "primary", text: s.startChat });
    this.prechat = h(
      "form",
      { class: "screen prechat", novalidate: true, onsubmit: (event) => this.submitPrechat(event) },
      h("p", { text: s.intro }),
      ...specs.map((spec) => this.field(spec)),
      this.startButton,
      this.formError,
    );

    // The conversation.
    this.messages = h("div", { class: "msgs" });
    this.outbox = h("div", { class: "outbox" });
    this.log = h(
      "div",
      { class: "log", role: "log", "aria-live": "polite", "aria-label": s.conversation, tabindex: "0" },
      this.messages,
      this.outbox,
    );
    this.connection = h("p");
    this.routing = h("p");
    this.replies = h("div", { class: "replies", role: "group", "aria-label": s.suggested, hidden: true });
    this.typing = h("div", { class: "typing", role: "status", "aria-label": s.typingStatus });
    this.alertBox = h("div", { class: "alert", role: "alert" });

    this.textarea = h("textarea", {
      "aria-label": s.message,
      placeholder: s.placeholder,
      rows: "1",
      maxlength: "16384",
      onkeydown: (event) => this.composerKey(event as KeyboardEvent),
      oninput: () => {
        this.grow();
        on.typed(this.textarea.value);
      },
    });
    this.fileInput = h("input", {
      type: "file",
      id: "nx-file",
      class: "vh",
      "aria-label": s.attach,
      accept: "image/*,audio/*,video/*,application/pdf,text/plain",
      onchange: () => {
        const file = this.fileInput.files?.[0];
        this.fileInput.value = "";
        if (file) on.attach(file);
      },
    });
    this.composer = h(
      "form",
      { class: "composer", onsubmit: (event) => this.submitMessage(event) },
      this.textarea,
      this.fileInput,
      h("label", { for: "nx-file", class: "ib", title: s.attach }, icon(icons.attach)),
      h("button", { type: "submit", class: "ib send", "aria-label": s.send, title: s.send }, icon(icons.send)),
    );

    this.confirmYes = h("button", {
      type: "button",
      class: "primary",
      text: s.confirmYes,
      onclick: () => on.end(),
    });
    this.confirm = h(
      "div",
      { class: "box", role: "group", "aria-labelledby": "nx-confirm", hidden: true },
      h("p", { id: "nx-confirm", text: s.confirmEnd }),
      this.confirmYes,
      h("button", { type: "button", class: "secondary", text: s.cancel, onclick: () => this.cancelEnd() }),
    );

    this.endedText = h("p", { text: s.chatEnded });
    this.newChatButton = h("button", {
      type: "button",
      class: "primary",
      text: s.newChat,
      onclick: () => on.newChat(),
    });
    this.endedBox = h("div", { class: "box", hidden: true }, this.endedText, this.newChatButton);

    this.chat = h(
      "div",
      { class: "screen", hidden: true },
      this.log,
      h("div", { class: "notice", role: "status", "aria-label": s.chatStatus }, this.connection, this.routing),
      this.replies,
      this.typing,
      this.alertBox,
      this.composer,
      this.confirm,
      this.endedBox,
    );

    this.panel = h(
      "div",
      {
        class: "panel",
        role: "dialog",
        "aria-labelledby": "nx-title",
        hidden: true,
        onkeydown: (event) => {
          if ((event as KeyboardEvent).key !== "Escape") return;
          event.stopPropagation();
          if (!this.confirm.hidden) this.cancelEnd();
          else this.minimise();
        },
      },
      head,
      this.prechat,
      this.chat,
    );

    this.root = h(
      "div",
      { class: left ? "root left" : "root", role: "region", "aria-label": s.region },
      this.launcher,
      this.panel,
    );
    shadow.appendChild(this.root);
    this.show("prechat");
  }

  /** The element that takes the site's colours. */
  get themed(): HTMLElement {
    return this.root;
  }

  // --- Open and minimise -----------------------------------------------------------------

  open(): void {
    if (this.isOpen) return;
    this.isOpen = true;
    this.panel.hidden = false;
    this.launcher.hidden = true;
    this.scrollToEnd();
    this.focusDefault();
    this.on.opened();
  }

  minimise(): void {
    if (!this.isOpen) return;
    this.isOpen = false;
    this.cancelEnd(false);
    this.panel.hidden = true;
    this.launcher.hidden = false;
    this.launcher.focus();
    this.on.minimised();
  }

  /** Focus to where the customer goes on: the first field, the composer, or "new chat". */
  focusDefault(): void {
    if (!this.isOpen) return;
    if (this.screen === "prechat") this.inputs.get("name")?.input.focus();
    else if (this.screen === "ended") this.newChatButton.focus();
    else this.textarea.focus();
  }

  setUnread(count: number): void {
    this.badge.hidden = count === 0;
    this.badge.textContent = count > 99 ? "99+" : String(count);
    this.launcher.setAttribute("aria-label", count ? format(this.s.openChatUnread, { n: count }) : this.s.openChat);
  }

  // --- Screens ---------------------------------------------------------------------------

  show(screen: Screen, gone = false): void {
    const hadFocus = this.shadow.activeElement !== null;
    this.screen = screen;
    this.prechat.hidden = screen !== "prechat";
    this.chat.hidden = screen === "prechat";
    this.endButton.hidden = screen !== "chat";
    this.composer.hidden = screen !== "chat";
    this.confirm.hidden = true;
    this.endedBox.hidden = screen !== "ended";
    this.endedText.textContent = gone ? this.s.chatGone : this.s.chatEnded;
    if (screen !== "chat") {
      this.setQuickReplies([]);
      this.setTyping("");
      this.setRouting("");
      this.setConnection("");
    }
    if (screen === "prechat") {
      this.setStarting(false);
      this.setCanDownload(false);
    }
    // Focus that was on a control now hidden would be lost: take it on.
    const active = this.shadow.activeElement;
    if (hadFocus && (!active || !(active as HTMLElement).offsetParent)) this.focusDefault();
  }

  setCanDownload(can: boolean): void {
    this.transcriptButton.hidden = !can;
  }

  // --- The pre-chat form -----------------------------------------------------------------

  private field(spec: FieldSpec): HTMLElement {
    const id = `nx-f-${spec.key}`;
    const hint = h("div", { class: "hint", id: `${id}-hint`, text: spec.required ? this.s.required : this.s.optional });
    const error = h("div", { class: "ferr", id: `${id}-err` });
    const input = h("input", {
      id,
      name: spec.key,
      type: spec.type,
      autocomplete: spec.autocomplete,
      required: spec.required,
      "aria-required": spec.required ? "true" : undefined,
      "aria-describedby": `${id}-hint ${id}-err`,
      maxlength: spec.key === "name" ? "100" : "256",
    });
    this.inputs.set(spec.key, { input, error });
    return h("div", { class: "field" }, h("label", { for: id, text: spec.label }), input, hint, error);
  }

  private setFieldError(key: string, message: string): void {
    const field = this.inputs.get(key);
    if (!field) return;
    field.error.textContent = message;
    if (message) field.input.setAttribute("aria-invalid", "true");
    else field.input.removeAttribute("aria-invalid");
  }

  private submitPrechat(event: Event): void {
    event.preventDefault();
    this.formError.textContent = "";
    const value = (key: string) => this.inputs.get(key)?.input.value.trim() ?? "";
    const name = value("name");
    const email = value("email");
    this.setFieldError("name", name ? "" : this.s.nameRequired);
    this.setFieldError("email", !email || EMAIL.test(email) ? "" : this.s.emailInvalid);
    const extra: Record<string, string> = {};
    for (const key of this.inputs.keys()) {
      if (key === "name" || key === "email") continue;
      this.setFieldError(key, "");
      if (value(key)) extra[key] = value(key);
    }
    const invalid = [...this.inputs.values()].find((field) => field.input.hasAttribute("aria-invalid"));
    if (invalid) {
      invalid.input.focus();
      return;
    }
    this.on.start({ name, email, extra });
  }

  /** A refusal of the start: on the field it names, if any, else under the form. */
  formFailed(message: string, field?: string): void {
    this.setStarting(false);
    if (field && this.inputs.has(field)) {
      this.setFieldError(field, message);
      this.inputs.get(field)?.input.focus();
    } else {
      this.formError.textContent = message;
    }
  }

  setStarting(starting: boolean): void {
    this.startButton.disabled = starting;
    this.startButton.textContent = starting ? this.s.starting : this.s.startChat;
  }

  prefill(values: Partial<Record<string, string>>): void {
    for (const [key, value] of Object.entries(values)) {
      const field = this.inputs.get(key);
      if (field && value !== undefined) field.input.value = value;
    }
  }

  fieldKeys(): string[] {
    return [...this.inputs.keys()];
  }

  // --- The conversation ------------------------------------------------------------------

  private nearEnd(): boolean {
    return this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 80;
  }

  private scrollToEnd(): void {
    this.log.scrollTop = this.log.scrollHeight;
  }

  clearLog(): void {
    this.messages.replaceChildren();
    this.outbox.replaceChildren();
    this.setQuickReplies([]);
    this.setCanDownload(false);
  }

  /** Puts a message's node in its place by position (they usually come last, in order). */
  addMessage(position: number, node: HTMLElement): void {
    const follow = this.nearEnd();
    node.dataset.position = String(position);
    let after = this.messages.lastElementChild as HTMLElement | null;
    while (after && Number(after.dataset.position) > position) {
      after = after.previousElementSibling as HTMLElement | null;
    }
    this.messages.insertBefore(node, after ? after.nextSibling : this.messages.firstChild);
    if (follow) this.scrollToEnd();
  }

  /** The customer's messages not yet in the transcript, after it, in the order written. */
  setOutbox(items: PendingItem[], nickname: string): void {
    const follow = this.nearEnd();
    const s = this.s;
    this.outbox.replaceChildren(
      ...items.map((item) => {
        const state =
          item.state === "sending"
            ? s.sending
            : item.state === "waiting"
              ? s.waitingToSend
              : format(s.notSent, { reason: item.reason ?? s.reasonOther });
        return h(
          "div",
          { class: `msg me pending${item.state === "failed" ? " failed" : ""}` },
          h("div", { class: "meta" }, h("span", { class: "who", text: nickname })),
          h("div", { class: "bubble", text: item.text }),
          h("div", { class: "state", text: state }),
          item.state === "failed" &&
            h(
              "div",
              { class: "acts" },
              h("button", { type: "button", text: s.retry, onclick: () => this.on.retry(item.id) }),
              h("button", { type: "button", text: s.remove, onclick: () => this.on.remove(item.id) }),
            ),
        );
      }),
    );
    if (follow) this.scrollToEnd();
  }

  /** A bot's question's options as buttons; none hides them. */
  setQuickReplies(options: string[]): void {
    const hadFocus = this.replies.contains(this.shadow.activeElement);
    this.replies.replaceChildren(
      ...options.map((option) =>
        h("button", {
          type: "button",
          text: option,
          onclick: () => {
            this.setQuickReplies([]);
            this.on.reply(option);
          },
        }),
      ),
    );
    this.replies.hidden = options.length === 0;
    if (hadFocus && options.length === 0) this.textarea.focus();
  }

  setTyping(text: string): void {
    if (this.typing.textContent !== text) this.typing.textContent = text;
  }

  setConnection(text: string): void {
    if (this.connection.textContent !== text) this.connection.textContent = text;
  }

  setRouting(text: string): void {
    if (this.routing.textContent !== text) this.routing.textContent = text;
  }

  /** A message for the customer (a refused file, a failed download), for a while. */
  alert(text: string): void {
    clearTimeout(this.alertTimer);
    this.alertBox.textContent = text;
    if (text) this.alertTimer = setTimeout(() => (this.alertBox.textContent = ""), 10_000);
  }

  // --- The composer ----------------------------------------------------------------------

  private grow(): void {
    this.textarea.style.height = "auto";
    this.textarea.style.height = `${Math.min(this.textarea.scrollHeight + 2, 120)}px`;
  }

  private composerKey(event: KeyboardEvent): void {
    // Enter sends, Shift+Enter is a new line; Enter that ends an IME composition is neither.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      this.submitMessage(event);
    }
  }

  private submitMessage(event: Event): void {
    event.preventDefault();
    const text = this.textarea.value.trim();
    if (!text) return;
    this.textarea.value = "";
    this.grow();
    this.alert("");
    this.on.send(text);
  }

  // --- Ending ----------------------------------------------------------------------------

  private askEnd(): void {
    if (this.screen !== "chat") return;
    this.composer.hidden = true;
    this.confirm.hidden = false;
    this.confirmYes.disabled = false;
    this.confirmYes.focus();
  }

  cancelEnd(focus = true): void {
    if (this.confirm.hidden) return;
    this.confirm.hidden = true;
    this.composer.hidden = this.screen !== "chat";
    if (focus) this.endButton.focus();
  }

  setEnding(ending: boolean): void {
    this.confirmYes.disabled = ending;
  }
}
