// Errors the agent must see: an assertive alert region, present from the start (a region added
// with its text is not reliably announced), each alert with its reference for support and a
// Dismiss button. The same message twice shows once.

import { h } from "./dom";
import { t } from "./strings";

const MAX_ALERTS = 4;

export class AlertsView {
  readonly el = h("div", { class: "alerts", attrs: { role: "alert", "aria-label": t.alerts } });

  constructor(
    /// Where focus goes when the focused Dismiss button goes away.
    private readonly refocus: () => void,
  ) {}

  show(message: string, reference?: string): void {
    for (const existing of this.el.querySelectorAll<HTMLElement>(".alert")) {
      if (existing.dataset.message === message) existing.remove();
    }
    const alert = h(
      "div",
      { class: "alert", attrs: { "data-message": message } },
      h("p", { class: "alert-text" }, h("span", { text: message }), reference ? h("span", { class: "alert-ref", text: ` ${t.reference(reference)}` }) : null),
      h("button", {
        class: "quiet small",
        text: t.dismiss,
        attrs: { type: "button" },
        on: {
          click: () => {
            const next = alert.nextElementSibling ?? alert.previousElementSibling;
            alert.remove();
            const button = next?.querySelector("button");
            if (button) button.focus();
            else this.refocus();
          },
        },
      }),
    );
    this.el.append(alert);
    while (this.el.children.length > MAX_ALERTS) this.el.firstElementChild?.remove();
  }

  clear(): void {
    this.el.replaceChildren();
  }
}
