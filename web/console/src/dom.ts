// Building DOM without markup strings: text goes in as textContent, attributes one by one, so
// nothing a customer writes can become markup (the page's CSP forbids inline script anyway).

type Child = Node | string | null | undefined | false;
type AttrValue = string | number | boolean | undefined;
type Handlers = { [K in keyof HTMLElementEventMap]?: (event: HTMLElementEventMap[K]) => void };

export interface Props {
  class?: string;
  text?: string;
  /// `true` sets an empty attribute, `false` and `undefined` leave it out.
  attrs?: Record<string, AttrValue>;
  on?: Handlers;
}

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, props: Props = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (props.class) el.className = props.class;
  if (props.text !== undefined) el.textContent = props.text;
  if (props.attrs) setAttrs(el, props.attrs);
  if (props.on) {
    for (const [name, handler] of Object.entries(props.on)) {
      if (handler) el.addEventListener(name, handler as EventListener);
    }
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child);
  }
  return el;
}

export function setAttrs(el: Element, attrs: Record<string, AttrValue>): void {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) el.removeAttribute(name);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
}

/// Sets text only when it differs: a live region re-announces any write.
export function setText(el: Element, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}

export function clear(el: Element): void {
  el.replaceChildren();
}

/// A stable id for an element tied to data (an interaction id is a UUID: safe in an id).
export function idFor(prefix: string, id: string): string {
  return `${prefix}-${id}`;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

/// A <time> for an RFC 3339 timestamp: the clock time shown, the full date as its title.
export function timeElement(timestamp: string): HTMLTimeElement | null {
  const date = new Date(timestamp);
  if (Number.isNaN(date.getTime())) return null;
  return h("time", { text: timeFormat.format(date), attrs: { datetime: timestamp, title: dateTimeFormat.format(date) } });
}

export function formatDateTime(timestamp: string): string {
  const date = new Date(timestamp);
  return Number.isNaN(date.getTime()) ? timestamp : dateTimeFormat.format(date);
}
