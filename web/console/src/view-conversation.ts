// The selected conversation, in the main landmark: its title and actions, the Transfer and Leave
// forms, the transcript (a polite log), the customer's typing, and the reply box.
//
// Built once; show() switches conversation (redrawing the transcript), update() follows changes
// of the one shown (buttons are hidden and shown, never rebuilt, so focus stays where it is),
// and append() puts new messages in their place by position.

import { h, setAttrs, setText } from "./dom";
import type { Conversation, Store } from "./store";
import { toggleButton } from "./view-header";
import { conversationStatus } from "./view-sidebar";
import { renderMessage } from "./view-transcript";
import { t } from "./strings";
import type { AfterAction, MediaFile, Message, ParticipantRole, SuperviseMode, Targets } from "./types";

export type TransferTarget = { queue: string } | { agentId: string; name: string };

export interface ConversationActions {
  /// Sends the text (a reply, or a custom notice); true when sent, to clear the box.
  send(id: string, text: string, note: boolean, notice: boolean): Promise<boolean>;
  typing(id: string, typing: boolean): void;
  targets(): Promise<Targets | undefined>;
  transfer(id: string, target: TransferTarget): Promise<boolean>;
  leave(id: string, after: AfterAction): Promise<boolean>;
  complete(id: string): void;
  supervise(id: string, mode: SuperviseMode): void;
  download(file: MediaFile): void;
  toggleDetails(): void;
}

const WRITERS: ReadonlySet<ParticipantRole> = new Set(["primary", "conference", "consult", "coach", "barge"]);
const WHISPERERS: ReadonlySet<ParticipantRole> = new Set(["consult", "coach"]);
const SUPERVISING: ReadonlySet<ParticipantRole> = new Set(["monitor", "coach", "barge"]);

/// What the agent may do in a conversation now, from their part in it.
export function permissions(conversation: Conversation, store: Store) {
  const role = conversation.role;
  const active = conversation.interaction.state === "active";
  const write = active && role !== undefined && WRITERS.has(role);
  const whisperOnly = role !== undefined && WHISPERERS.has(role);
  return {
    write,
    whisperOnly,
    note: write && !whisperOnly,
    transfer: active && (role === "primary" || role === "conference"),
    leave: role !== undefined,
    complete: conversation.mine && (role === undefined || role === "primary"),
    supervise: store.isSupervisor && active && (role === undefined ? !conversation.mine : SUPERVISING.has(role)),
  };
}

export class ConversationView {
  readonly el: HTMLElement;
  readonly heading = h("h2", { attrs: { id: "conversation-title", tabindex: "-1" } });
  private readonly emptyState: HTMLElement;
  private readonly body: HTMLElement;
  private readonly meta = h("p", { class: "conversation-meta" });
  private readonly notice = h("p", { class: "conversation-notice" });
  private readonly log: HTMLElement;
  private readonly list = h("ol", { class: "transcript-list" });
  private readonly loading = h("p", { class: "transcript-status", text: t.loadingTranscript });
  private readonly typingLine = h("p", { class: "typing", attrs: { role: "status", "aria-live": "polite" } });
  private readonly rows = new Map<number, HTMLLIElement>();
  private readonly drafts = new Map<string, string>();
  private readonly notes = new Map<string, boolean>();
  private shownId: string | undefined;

  // Actions.
  private readonly monitorButton: HTMLButtonElement;
  private readonly coachButton: HTMLButtonElement;
  private readonly bargeButton: HTMLButtonElement;
  private readonly superviseGroup: HTMLElement;
  private readonly transferButton: HTMLButtonElement;
  private readonly leaveButton: HTMLButtonElement;
  private readonly completeButton: HTMLButtonElement;
  readonly detailsButton: HTMLButtonElement;

  // Transfer form.
  private readonly transferForm: HTMLFormElement;
  private readonly transferSelect = h("select", { attrs: { id: "transfer-target", name: "target" } });
  private readonly transferQueueField: HTMLElement;
  private readonly transferQueueInput = h("input", { attrs: { id: "transfer-queue", name: "queue", type: "text", autocomplete: "off" } });
  private readonly transferStatus = h("p", { class: "form-status", attrs: { role: "status" } });
  private readonly transferSelectField: HTMLElement;

  // Leave form.
  private readonly leaveForm: HTMLFormElement;
  private readonly leaveSelect: HTMLSelectElement;

  // Composer.
  private readonly composer: HTMLFormElement;
  private readonly reply: HTMLTextAreaElement;
  private readonly replyHint = h("p", { class: "hint", attrs: { id: "reply-hint" } });
  private readonly replyError = h("p", { class: "field-error", attrs: { id: "reply-error", role: "status" } });
  private readonly noteField: HTMLElement;
  private readonly noteBox = h("input", { attrs: { id: "reply-note", type: "checkbox" } });
  private readonly noticeButton: HTMLButtonElement;
  private readonly sendButton: HTMLButtonElement;
  private sending = false;

  constructor(
    private readonly store: Store,
    private readonly actions: ConversationActions,
  ) {
    const button = (text: string, onClick: () => void, attrs: Record<string, string> = {}, cls = ""): HTMLButtonElement =>
      h("button", { class: cls, text, attrs: { type: "button", ...attrs }, on: { click: onClick } });
    const current = (): string | undefined => this.shownId;

    this.monitorButton = toggleButton(t.monitor, () => this.supervise("monitor"));
    this.coachButton = toggleButton(t.coach, () => this.supervise("coach"));
    this.bargeButton = toggleButton(t.bargeIn, () => this.supervise("barge-in"));
    this.superviseGroup = h(
      "div",
      { class: "supervise", attrs: { role: "group", "aria-label": t.supervise } },
      this.monitorButton,
      this.coachButton,
      this.bargeButton,
    );
    this.transferButton = button(t.transfer, () => this.toggleForm("transfer"), { "aria-expanded": "false", "aria-controls": "transfer-form" });
    this.leaveButton = button(t.leave, () => this.toggleForm("leave"), { "aria-expanded": "false", "aria-controls": "leave-form" });
    this.completeButton = button(t.complete, () => {
      const id = current();
      if (id) this.actions.complete(id);
    });
    this.detailsButton = button(t.details, () => this.actions.toggleDetails(), { "aria-expanded": "true", "aria-controls": "details" }, "quiet");

    // Transfer: a queue by name (place-in-queue) or an agent (transfer-agent), from GET targets;
    // a plain queue-name field when the targets cannot be read.
    this.transferSelectField = h("div", { class: "field" }, h("label", { attrs: { for: "transfer-target" }, text: t.transferTo }), this.transferSelect);
    this.transferQueueField = h(
      "div",
      { class: "field", attrs: { hidden: true } },
      h("label", { attrs: { for: "transfer-queue" }, text: t.transferManual }),
      this.transferQueueInput,
    );
    this.transferForm = h(
      "form",
      {
        class: "drawer",
        attrs: { id: "transfer-form", hidden: true, "aria-label": t.transfer },
        on: { submit: (event) => this.submitTransfer(event) },
      },
      this.transferSelectField,
      this.transferQueueField,
      h(
        "div",
        { class: "drawer-actions" },
        h("button", { class: "primary", text: t.transferSubmit, attrs: { type: "submit" } }),
        button(t.cancel, () => this.closeForms(this.transferButton)),
      ),
      this.transferStatus,
    );

    // Leave: what becomes of the chat. KeepAlive first: an asynchronous chat stays open for the
    // customer, who may write again hours later.
    const afterOptions: [AfterAction, string][] = [
      ["KeepAlive", t.afterKeepAlive],
      ["CloseIfNoAgents", t.afterCloseIfNoAgents],
      ["ForceClose", t.afterForceClose],
    ];
    this.leaveSelect = h("select", { attrs: { id: "leave-after", name: "afterAction" } }, ...afterOptions.map(([value, label]) => h("option", { text: label, attrs: { value } })));
    this.leaveForm = h(
      "form",
      {
        class: "drawer",
        attrs: { id: "leave-form", hidden: true, "aria-label": t.leave },
        on: { submit: (event) => this.submitLeave(event) },
      },
      h("div", { class: "field" }, h("label", { attrs: { for: "leave-after" }, text: t.afterLeaving }), this.leaveSelect),
      h(
        "div",
        { class: "drawer-actions" },
        h("button", { class: "primary", text: t.leaveSubmit, attrs: { type: "submit" } }),
        button(t.cancel, () => this.closeForms(this.leaveButton)),
      ),
    );

    // The transcript: a polite log, focusable so that a keyboard scrolls it.
    this.log = h(
      "div",
      { class: "transcript", attrs: { role: "log", "aria-live": "polite", "aria-label": t.transcript, tabindex: "0" } },
      this.list,
    );

    // The reply box: Enter sends, Shift+Enter is a new line.
    this.reply = h("textarea", {
      attrs: { id: "reply", name: "reply", rows: "3", "aria-describedby": "reply-hint reply-error" },
      on: {
        keydown: (event) => {
          if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
            event.preventDefault();
            void this.submit(false);
          }
        },
        input: () => {
          const id = current();
          if (!id) return;
          this.drafts.set(id, this.reply.value);
          if (this.replyError.textContent) this.replyError.textContent = "";
          this.reply.removeAttribute("aria-invalid");
          if (this.typingAllowed()) this.actions.typing(id, this.reply.value.trim() !== "");
        },
        blur: () => {
          const id = current();
          if (id && this.typingAllowed()) this.actions.typing(id, false);
        },
      },
    });
    this.noteBox.addEventListener("change", () => {
      const id = current();
      if (!id) return;
      this.notes.set(id, this.noteBox.checked);
      this.composer.classList.toggle("is-note", this.noteBox.checked);
      // An internal note is not for the customer's eyes: neither is its typing.
      if (this.noteBox.checked) this.actions.typing(id, false);
    });
    this.noteField = h("label", { class: "check" }, this.noteBox, " ", t.internalNoteOption);
    this.noticeButton = button(t.customNotice, () => void this.submit(true), {}, "quiet");
    this.sendButton = h("button", { class: "primary", text: t.send, attrs: { type: "submit" } });
    this.composer = h(
      "form",
      {
        class: "composer",
        on: {
          submit: (event) => {
            event.preventDefault();
            void this.submit(false);
          },
        },
      },
      h("label", { class: "composer-label", attrs: { for: "reply" }, text: t.reply }),
      this.reply,
      h("div", { class: "composer-bar" }, this.replyHint, h("div", { class: "composer-actions" }, this.noteField, this.noticeButton, this.sendButton)),
      this.replyError,
    );

    this.emptyState = h(
      "div",
      { class: "conversation-empty" },
      h("h2", { text: t.noSelectionHeading, attrs: { id: "empty-title" } }),
      h("p", { text: t.noSelection }),
    );
    this.body = h(
      "div",
      { class: "conversation-body", attrs: { hidden: true } },
      h(
        "div",
        { class: "conversation-head" },
        h("div", { class: "conversation-title" }, this.heading, this.meta),
        h(
          "div",
          { class: "actions", attrs: { role: "group", "aria-label": t.conversationActions } },
          this.superviseGroup,
          this.transferButton,
          this.leaveButton,
          this.completeButton,
          this.detailsButton,
        ),
      ),
      this.transferForm,
      this.leaveForm,
      this.notice,
      this.loading,
      this.log,
      this.typingLine,
      this.composer,
    );
    this.el = h("section", { class: "conversation", attrs: { id: "conversation-panel", "aria-labelledby": "empty-title" } }, this.emptyState, this.body);
  }

  get shown(): string | undefined {
    return this.shownId;
  }

  private typingAllowed(): boolean {
    const conversation = this.shownId ? this.store.conversations.get(this.shownId) : undefined;
    if (!conversation) return false;
    const can = permissions(conversation, this.store);
    return can.write && !can.whisperOnly && !this.noteBox.checked;
  }

  /// Switches to a conversation (or to none), redrawing the transcript.
  show(conversation: Conversation | undefined): void {
    if (this.shownId && this.shownId !== conversation?.id && this.typingAllowed()) this.actions.typing(this.shownId, false);
    this.closeForms();
    this.shownId = conversation?.id;
    this.rows.clear();
    this.list.replaceChildren();
    this.emptyState.hidden = conversation !== undefined;
    this.body.hidden = conversation === undefined;
    if (!conversation) {
      setAttrs(this.el, { role: undefined, "aria-labelledby": "empty-title" });
      return;
    }
    // One of the agent's tabs: this is its tabpanel. A supervisor's preview is a plain region.
    setAttrs(this.el, {
      role: conversation.mine ? "tabpanel" : undefined,
      "aria-labelledby": conversation.mine ? `tab-${conversation.id}` : "conversation-title",
    });
    this.reply.value = this.drafts.get(conversation.id) ?? "";
    this.noteBox.checked = this.notes.get(conversation.id) ?? false;
    this.composer.classList.toggle("is-note", this.noteBox.checked);
    this.replyError.textContent = "";
    this.reply.removeAttribute("aria-invalid");
    // Redrawn whole: tell assistive technology not to read it out as news.
    this.log.setAttribute("aria-busy", "true");
    this.insert([...conversation.messages.values()].sort((a, b) => a.position - b.position), conversation);
    this.log.setAttribute("aria-busy", "false");
    this.update(conversation);
    this.updateTyping(conversation);
    this.scrollToEnd();
  }

  /// Follows a change of the conversation shown.
  update(conversation: Conversation): void {
    if (conversation.id !== this.shownId) return;
    const can = permissions(conversation, this.store);
    setText(this.heading, conversation.customerName);
    const queue = conversation.interaction.queue;
    setText(this.meta, [queue, conversationStatus(conversation)].filter(Boolean).join(" · "));

    this.superviseGroup.hidden = !can.supervise;
    setAttrs(this.monitorButton, { "aria-pressed": String(conversation.role === "monitor") });
    setAttrs(this.coachButton, { "aria-pressed": String(conversation.role === "coach") });
    setAttrs(this.bargeButton, { "aria-pressed": String(conversation.role === "barge") });
    this.transferButton.hidden = !can.transfer;
    this.leaveButton.hidden = !can.leave;
    this.completeButton.hidden = !can.complete;
    if (!can.transfer && !this.transferForm.hidden) this.closeForms();
    if (!can.leave && !this.leaveForm.hidden) this.closeForms();
    // A supervisor leaving their watch keeps the chat open for those still in it.
    if (conversation.role && SUPERVISING.has(conversation.role)) this.leaveSelect.value = "KeepAlive";

    let notice = "";
    if (!conversation.mine && !conversation.role) notice = t.previewing;
    else if (conversation.role === "monitor") notice = t.monitoringReadOnly;
    else if (conversation.interaction.state === "ended") notice = t.chatEndedNotice;
    else if (!conversation.role) notice = t.youLeft;
    setText(this.notice, notice);
    this.notice.hidden = notice === "";

    this.loading.hidden = conversation.loaded;
    this.composer.hidden = !can.write;
    this.noteField.hidden = !can.note;
    if (!can.note && this.noteBox.checked) this.noteBox.checked = false;
    this.composer.classList.toggle("is-note", can.whisperOnly || this.noteBox.checked);
    setText(this.replyHint, can.whisperOnly ? `${t.coachHint} ${t.replyHint}` : t.replyHint);
  }

  updateTyping(conversation: Conversation): void {
    if (conversation.id !== this.shownId) return;
    setText(this.typingLine, conversation.typing ? t.isTyping(conversation.typing.nickname) : "");
  }

  /// New messages of the conversation shown, each in its place by position.
  append(conversation: Conversation, added: Message[]): void {
    if (conversation.id !== this.shownId) return;
    const nearEnd = this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 120;
    const own = this.insert(added, conversation);
    if (nearEnd || own) this.scrollToEnd();
  }

  /// Inserts messages not shown yet; whether one of them is the agent's own.
  private insert(messages: Message[], conversation: Conversation): boolean {
    let own = false;
    for (const message of messages) {
      if (this.rows.has(message.position)) continue;
      const mine = this.store.isMine(conversation, message);
      own ||= mine;
      const row = renderMessage(message, { mine, download: (file) => this.actions.download(file) });
      this.rows.set(message.position, row);
      let before: HTMLLIElement | null = null;
      for (const [position, other] of this.rows) {
        if (position > message.position && (!before || position < Number(before.dataset.position))) before = other;
      }
      this.list.insertBefore(row, before);
    }
    return own;
  }

  private scrollToEnd(): void {
    this.log.scrollTop = this.log.scrollHeight;
  }

  /// Where focus goes when a conversation opens: the reply box, or its title when read-only.
  focus(): void {
    if (!this.composer.hidden && !this.body.hidden) this.reply.focus();
    else if (!this.body.hidden) this.heading.focus();
  }

  setDetailsExpanded(expanded: boolean): void {
    setAttrs(this.detailsButton, { "aria-expanded": String(expanded) });
  }

  // --- Sending -----------------------------------------------------------------------------------

  private async submit(notice: boolean): Promise<void> {
    const id = this.shownId;
    const conversation = id ? this.store.conversations.get(id) : undefined;
    if (!id || !conversation || this.sending) return;
    const text = this.reply.value.trim();
    if (!text) {
      this.replyError.textContent = notice ? t.emptyNotice : t.emptyMessage;
      this.reply.setAttribute("aria-invalid", "true");
      this.reply.focus();
      return;
    }
    const can = permissions(conversation, this.store);
    this.sending = true;
    this.sendButton.disabled = this.noticeButton.disabled = true;
    try {
      const sent = await this.actions.send(id, text, can.whisperOnly || this.noteBox.checked, notice);
      if (sent && this.shownId === id) {
        this.reply.value = "";
        this.drafts.delete(id);
      }
    } finally {
      this.sending = false;
      this.sendButton.disabled = this.noticeButton.disabled = false;
      if (this.shownId === id) this.reply.focus();
    }
  }

  // --- Supervision -------------------------------------------------------------------------------

  private supervise(mode: SuperviseMode): void {
    if (this.shownId) this.actions.supervise(this.shownId, mode);
  }

  // --- Transfer and leave forms ------------------------------------------------------------------

  private toggleForm(which: "transfer" | "leave"): void {
    const form = which === "transfer" ? this.transferForm : this.leaveForm;
    const opener = which === "transfer" ? this.transferButton : this.leaveButton;
    if (!form.hidden) {
      this.closeForms(opener);
      return;
    }
    this.closeForms();
    form.hidden = false;
    setAttrs(opener, { "aria-expanded": "true" });
    if (which === "transfer") void this.loadTargets();
    else this.leaveSelect.focus();
  }

  /// Closes both forms; focus goes back to the button that opened one, when given.
  private closeForms(returnTo?: HTMLButtonElement): void {
    this.transferForm.hidden = true;
    this.leaveForm.hidden = true;
    setAttrs(this.transferButton, { "aria-expanded": "false" });
    setAttrs(this.leaveButton, { "aria-expanded": "false" });
    if (returnTo && !returnTo.hidden) returnTo.focus();
  }

  private async loadTargets(): Promise<void> {
    this.transferSelect.replaceChildren();
    this.transferStatus.textContent = t.transferLoading;
    const targets = await this.actions.targets();
    if (this.transferForm.hidden) return;
    this.transferStatus.textContent = "";
    const me = this.store.agent?.id;
    const agents = (targets?.agents ?? []).filter((a) => a.id !== me);
    const queues = targets?.queues ?? [];
    if (queues.length) {
      this.transferSelect.append(
        h("optgroup", { attrs: { label: t.transferQueues } }, ...queues.map((q) => h("option", { text: t.transferQueueOption(q), attrs: { value: `queue:${q}` } }))),
      );
    }
    if (agents.length) {
      this.transferSelect.append(
        h(
          "optgroup",
          { attrs: { label: t.transferAgents } },
          ...agents.map((a) => h("option", { text: t.agentOption(a.nickname, a.state.replace("_", " ")), attrs: { value: `agent:${a.id}`, "data-name": a.nickname } })),
        ),
      );
    }
    // Without the list (or with nothing in it), a queue can still be named by hand.
    const manual = !targets || (!queues.length && !agents.length);
    this.transferSelectField.hidden = manual;
    this.transferQueueField.hidden = !manual;
    if (targets && manual) this.transferStatus.textContent = t.transferNoTargets;
    (manual ? this.transferQueueInput : this.transferSelect).focus();
  }

  private async submitTransfer(event: SubmitEvent): Promise<void> {
    event.preventDefault();
    const id = this.shownId;
    if (!id) return;
    let target: TransferTarget | undefined;
    if (!this.transferQueueField.hidden) {
      const queue = this.transferQueueInput.value.trim();
      if (queue) target = { queue };
    } else {
      const value = this.transferSelect.value;
      const option = this.transferSelect.selectedOptions[0];
      if (value.startsWith("queue:")) target = { queue: value.slice("queue:".length) };
      else if (value.startsWith("agent:")) target = { agentId: value.slice("agent:".length), name: option?.dataset.name ?? "" };
    }
    if (!target) return;
    if (await this.actions.transfer(id, target)) this.closeForms();
  }

  private async submitLeave(event: SubmitEvent): Promise<void> {
    event.preventDefault();
    const id = this.shownId;
    if (!id) return;
    const value = this.leaveSelect.value;
    const after: AfterAction = value === "ForceClose" || value === "CloseIfNoAgents" ? value : "KeepAlive";
    if (await this.actions.leave(id, after)) this.closeForms();
  }
}
