// The widget's options, from its own <script> element's data- attributes.

import { pickLang, type Lang } from "./strings";
import type { TransportMode } from "./transport";

export interface Options {
  /** The nexus that serves the Chat API, without a trailing slash. */
  url: string;
  apiKey: string;
  endpoint: string;
  title: string | undefined;
  lang: Lang;
  /** Extra pre-chat fields: phoneNumber, subject, or user data by name. */
  fields: string[];
  primaryColor: string | undefined;
  position: "left" | "right";
  transport: TransportMode;
}

const SCRIPT_PATH = /\/widget\/nexus-chat\.js(?:[?#]|$)/;

/**
 * The widget's script element. `document.currentScript` is set while a script written in the
 * page runs, but null for one a page inserted itself (the demo does): then it is the script
 * whose src ends in /widget/nexus-chat.js. Call it while this script first runs.
 */
export function findScript(): HTMLScriptElement | null {
  const current = document.currentScript;
  if (current instanceof HTMLScriptElement && current.dataset.apiKey !== undefined) return current;
  const scripts = document.querySelectorAll<HTMLScriptElement>("script[src]");
  for (let i = scripts.length - 1; i >= 0; i--) {
    if (SCRIPT_PATH.test(scripts[i].src)) return scripts[i];
  }
  return current instanceof HTMLScriptElement ? current : null;
}

export function readOptions(script: HTMLScriptElement | null): Options | null {
  const data = script?.dataset ?? {};
  let url = (data.nexusUrl || "").trim();
  if (!url && script?.src) url = new URL(script.src, location.href).origin;
  if (!url) url = location.origin;
  try {
    url = new URL(url, location.href).href;
  } catch {
    return null;
  }
  url = url.replace(/\/+$/, "");
  const apiKey = (data.apiKey || "").trim();
  if (!apiKey) return null;
  const transport = data.transport === "socket" || data.transport === "long-poll" ? data.transport : "auto";
  return {
    url,
    apiKey,
    endpoint: (data.endpoint || "").trim(),
    title: data.title?.trim() || undefined,
    lang: pickLang(data.language),
    fields: (data.prechatFields || "")
      .split(",")
      .map((field) => field.trim())
      .filter((field) => /^[A-Za-z][\w-]{0,63}$/.test(field) && !["name", "email", "nickname", "firstName"].includes(field)),
    primaryColor: data.primaryColor?.trim() || undefined,
    position: data.position === "left" ? "left" : "right",
    transport,
  };
}
