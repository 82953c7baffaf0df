// The details of the conversation shown (a complementary landmark, collapsible): the customer,
// the queue and routing, who is in it, and its user data, which the agent may add to, change
// (update-user-data) and remove keys from (delete-user-data) while taking part.

import { formatDateTime, h, setText } from "./dom";
import type { Conversation } from "./store";
import { t } from "./strings";
import type { JsonObject } from "./types";

export interface DetailsActions {
  setUserData(id: string, key: string, value: string): Promise<boolean>;
  removeUserData(id: string, key: string): void;
}

function show(value: unknown): string {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

const ROUTING_TEXT: Record<string, string> = {
  none: "—",
  queued: t.stateQueued,
  invited: t.stateInvited,
  assigned: t.stateActive,
  idle: t.stateIdle,
  done: t.stateDone,
};

export class DetailsView {
  readonly el: HTMLElement;
  private readonly summary = h("dl", { class: "facts" });
  private readonly people = h("ul", { class: "people" });
  private readonly data = h("dl", { class: "facts user-data" });
  private readonly noData = h("p", { class: "empty", text: t.noUserData });
  private readonly form: HTMLFormElement;
  private readonly keyInput = h("input", { attrs: { id: "ud-key", name: "key", type: "text", autocomplete: "off" } });
  private readonly valueInput = h("input", { attrs: { id: "ud-value", name: "value", type: "text", autocomplete: "off" } });
  private readonly formError = h("p", { class: "field-error", attrs: { role: "status" } });
  private readonly content: HTMLElement;
  private readonly empty = h("p", { class: "empty", text: t.noSelection });
  private shownId: string | undefined;
  private lastData = "";

  constructor(private readonly actions: DetailsActions) {
    this.form = h(
      "form",
      {
        class: "ud-form",
        attrs: { "aria-labelledby": "ud-form-title" },
        on: {
          submit: (event) => {
            event.preventDefault();
            void this.submit();
          },
        },
      },
      h("h4", { text: t.addUserData, attrs: { id: "ud-form-title" } }),
      h("div", { class: "field" }, h("label", { attrs: { for: "ud-key" }, text: t.key }), this.keyInput),
      h("div", { class: "field" }, h("label", { attrs: { for: "ud-value" }, text: t.value }), this.valueInput),
      h("button", { text: t.save, attrs: { type: "submit" } }),
      this.formError,
    );
    this.content = h(
      "div",
      { class: "details-content", attrs: { hidden: true } },
      h("section", { attrs: { "aria-labelledby": "details-customer" } }, h("h3", { text: t.customerHeading, attrs: { id: "details-customer" } }), this.summary),
      h("section", { attrs: { "aria-labelledby": "details-people" } }, h("h3", { text: t.participants, attrs: { id: "details-people" } }), this.people),
      h(
        "section",
        { attrs: { "aria-labelledby": "details-data" } },
        h("h3", { text: t.userData, attrs: { id: "details-data" } }),
        this.noData,
        this.data,
        this.form,
      ),
    );
    this.el = h(
      "aside",
      { class: "details", attrs: { id: "details", "aria-labelledby": "details-heading" } },
      h("h2", { text: t.details, attrs: { id: "details-heading" } }),
      this.empty,
      this.content,
    );
  }

  update(conversation: Conversation | undefined, canEdit: boolean): void {
    this.empty.hidden = conversation !== undefined;
    this.content.hidden = conversation === undefined;
    if (!conversation) {
      this.shownId = undefined;
      return;
    }
    if (this.shownId !== conversation.id) {
      this.shownId = conversation.id;
      this.keyInput.value = "";
      this.valueInput.value = "";
      this.formError.textContent = "";
      this.lastData = "";
    }
    const i = conversation.interaction;
    const facts: [string, string][] = [
      [t.nickname, conversation.customerName],
      [t.queue, i.queue ?? "—"],
      [t.routing, i.state === "ended" ? t.stateEnded : (ROUTING_TEXT[i.routingState] ?? i.routingState)],
      [t.started, i.createdAt ? formatDateTime(i.createdAt) : "—"],
    ];
    this.summary.replaceChildren(...facts.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })]));
    this.people.replaceChildren(
      ...i.participants.map((p) => h("li", { text: p.role ? `${p.nickname || p.type} (${t.roleNames[p.role] ?? p.role})` : `${p.nickname || p.type} (${p.type})` })),
    );
    this.form.hidden = !canEdit;
    this.renderData(i.userData, canEdit);
  }

  private renderData(userData: JsonObject, canEdit: boolean): void {
    // Redrawn only when it changed: a Remove button under the keyboard must not vanish for
    // nothing.
    const signature = JSON.stringify([userData, canEdit]);
    if (signature === this.lastData) return;
    this.lastData = signature;
    const keys = Object.keys(userData).sort();
    this.noData.hidden = keys.length > 0;
    this.data.hidden = keys.length === 0;
    this.data.replaceChildren(
      ...keys.flatMap((key) => [
        h("dt", { text: key }),
        h(
          "dd",
          {},
          h("span", { class: "ud-value", text: show(userData[key]) }),
          canEdit
            ? h("button", {
                class: "quiet small",
                text: t.removeKey(key),
                attrs: { type: "button" },
                on: {
                  click: () => {
                    if (this.shownId) this.actions.removeUserData(this.shownId, key);
                    this.keyInput.focus();
                  },
                },
              })
            : null,
        ),
      ]),
    );
  }

  private async submit(): Promise<void> {
    const id = this.shownId;
    if (!id) return;
    const key = this.keyInput.value.trim();
    if (!key) {
      setText(this.formError, t.keyRequired);
      this.keyInput.focus();
      return;
    }
    setText(this.formError, "");
    if (await this.actions.setUserData(id, key, this.valueInput.value)) {
      this.keyInput.value = "";
      this.valueInput.value = "";
      this.keyInput.focus();
    }
  }
}
