// The sign-in page, shown when the console has no token (or nexus refused the one it had): one
// password-type field, checked by the caller against GET /nexus/v3/workspace/me.

import { h } from "./dom";
import { t } from "./strings";

/// Answers an error to show, or undefined when the token was taken.
export type SignIn = (token: string) => Promise<string | undefined>;

export function renderSignIn(root: HTMLElement, signIn: SignIn, notice?: string): void {
  const error = h("p", { class: "field-error", attrs: { id: "token-error", role: "alert" } });
  const input = h("input", {
    attrs: {
      id: "token",
      name: "token",
      type: "password",
      autocomplete: "off",
      spellcheck: "false",
      required: true,
      "aria-describedby": "token-help token-error",
    },
  });
  const button = h("button", { class: "primary", text: t.signIn, attrs: { type: "submit" } });
  const form = h(
    "form",
    {
      class: "signin-form",
      attrs: { novalidate: true },
      on: {
        submit: (event) => {
          event.preventDefault();
          const token = input.value.trim();
          if (!token) {
            error.textContent = t.tokenRequired;
            input.setAttribute("aria-invalid", "true");
            input.focus();
            return;
          }
          button.disabled = true;
          button.textContent = t.signingIn;
          void signIn(token).then((problem) => {
            if (problem === undefined) return;
            button.disabled = false;
            button.textContent = t.signIn;
            error.textContent = problem;
            input.setAttribute("aria-invalid", "true");
            input.select();
            input.focus();
          });
        },
      },
    },
    h("label", { attrs: { for: "token" }, text: t.tokenLabel }),
    input,
    h("p", { class: "hint", attrs: { id: "token-help" }, text: t.signInIntro }),
    error,
    button,
  );
  if (notice) error.textContent = notice;
  root.replaceChildren(
    h(
      "div",
      { class: "signin" },
      h("header", { class: "signin-banner" }, h("p", { class: "brand" }, t.brand, " ", h("span", { text: t.brandSuffix }))),
      h("main", { class: "signin-main" }, h("h1", { text: t.signInHeading }), form),
    ),
  );
  document.title = t.appTitle;
  input.focus();
}
