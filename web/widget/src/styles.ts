// The widget's style sheet, inside its shadow root: the host page's styles do not reach in and
// these do not leak out. A constructed sheet (adoptedStyleSheets) is not subject to the page's
// style-src policy; a <style> element is the fallback where constructed sheets are missing.
//
// Colours meet WCAG AA on white (#555 is 7.5:1, #b3261e 6.5:1); text on the primary colour is
// white or near-black, whichever contrasts more (see `onPrimary`).

const SHEET = `
:host{all:initial}
*{box-sizing:border-box}
[hidden]{display:none!important}
.root{--p:#1f5fbf;--op:#fff;position:fixed;bottom:20px;right:20px;z-index:2147483000;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;color:#1a1a1a;text-align:left}
.root.left{right:auto;left:20px}
button,input,textarea{font:inherit;color:inherit;margin:0}
button{cursor:pointer}
button:disabled{cursor:default;opacity:.7}
:focus-visible{outline:3px solid #0b57d0;outline-offset:2px}
svg{width:20px;height:20px;fill:currentColor;display:block}
.launcher{width:58px;height:58px;border-radius:50%;border:0;background:var(--p);color:var(--op);box-shadow:0 4px 14px rgba(0,0,0,.3);display:grid;place-items:center;position:relative;padding:0}
.launcher svg{width:28px;height:28px}
.badge{position:absolute;top:-6px;right:-6px;min-width:24px;height:24px;padding:0 6px;border-radius:12px;background:#b3261e;color:#fff;font-size:12px;font-weight:700;line-height:20px;text-align:center;border:2px solid #fff}
.panel{width:380px;height:580px;max-width:calc(100vw - 40px);max-height:calc(100vh - 40px);background:#fff;border-radius:12px;box-shadow:0 8px 32px rgba(0,0,0,.32);display:flex;flex-direction:column;overflow:hidden}
.head{display:flex;align-items:center;gap:2px;padding:8px 8px 8px 16px;background:var(--p);color:var(--op);flex:none}
.head h2{flex:1;margin:0;font-size:16px;font-weight:600;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.ib{width:38px;height:38px;border:0;border-radius:8px;background:transparent;display:grid;place-items:center;padding:0;flex:none}
.ib:hover{background:rgba(128,128,128,.22)}
.head :focus-visible{outline-color:var(--op);outline-offset:-4px}
.screen{flex:1;min-height:0;display:flex;flex-direction:column}
.prechat{padding:16px;overflow-y:auto;gap:14px}
.prechat p{margin:0}
.field label{display:block;font-weight:600;margin-bottom:4px}
.field input{width:100%;padding:9px 10px;border:1px solid #6b6b6b;border-radius:6px;background:#fff}
.field input[aria-invalid=true]{border:2px solid #b3261e}
.hint{font-size:12px;color:#555;margin-top:3px}
.ferr{font-size:13px;color:#b3261e;margin-top:3px}
.ferr:empty,.alert:empty{display:none}
.alert{padding:6px 12px;color:#b3261e;font-size:13px}
.primary{background:var(--p);color:var(--op);border:0;border-radius:8px;padding:10px 16px;font-weight:600}
.secondary{background:#fff;color:#1a1a1a;border:1px solid #6b6b6b;border-radius:8px;padding:8px 14px}
.log{flex:1;min-height:0;overflow-y:auto;padding:12px;display:flex;flex-direction:column}
.log:focus-visible{outline-offset:-3px}
.msgs,.outbox{display:flex;flex-direction:column;gap:10px}
.outbox:not(:empty){margin-top:10px}
.msg{max-width:86%;align-self:flex-start;display:flex;flex-direction:column;align-items:flex-start}
.msg.me{align-self:flex-end;align-items:flex-end}
.meta{font-size:12px;color:#555;margin:0 4px 2px}
.who{font-weight:600;color:#1a1a1a}
.tag{margin-left:4px;padding:0 5px;border-radius:4px;border:1px solid #555;font-size:11px}
.bubble{padding:8px 12px;border-radius:14px;background:#eef0f3;white-space:pre-wrap;overflow-wrap:anywhere;max-width:100%}
.bubble a{color:#0b4fb3}
.me .bubble{background:var(--p);color:var(--op)}
.me .bubble a{color:inherit}
.bot .bubble{background:#e4eefc}
.sup .bubble{background:#fff4d6;border:1px solid #a37c00}
.pending .bubble{outline:2px dashed var(--p);outline-offset:1px}
.state{font-size:12px;color:#555;margin:2px 4px 0}
.failed .state{color:#b3261e}
.acts{display:flex;gap:6px;margin-top:4px}
.acts button,.files button{background:#fff;border:1px solid #6b6b6b;border-radius:6px;padding:3px 10px;font-size:13px;color:#1a1a1a}
.files{display:flex;flex-direction:column;align-items:inherit;gap:4px;margin-top:4px}
.files button{text-decoration:underline;text-align:left;overflow-wrap:anywhere}
.sys{align-self:center;text-align:center;font-size:12px;color:#555;max-width:90%}
.notice p{margin:0;padding:6px 12px;font-size:13px;background:#f1f3f5;border-top:1px solid #d0d4da}
.notice p:empty{display:none}
.replies{display:flex;flex-wrap:wrap;gap:6px;padding:4px 12px 8px;justify-content:flex-end}
.replies button{background:#fff;color:#1a1a1a;border:2px solid var(--p);border-radius:16px;padding:4px 12px}
.typing{min-height:22px;padding:2px 12px;font-size:12px;color:#555;font-style:italic}
.composer{display:flex;align-items:flex-end;gap:4px;padding:8px;border-top:1px solid #d0d4da;flex:none}
.composer textarea{flex:1;resize:none;border:1px solid #6b6b6b;border-radius:8px;padding:8px 10px;min-height:40px;max-height:120px;background:#fff;line-height:1.4}
.composer textarea::placeholder{color:#666}
.composer label.ib{cursor:pointer}
.composer .send{background:var(--p);color:var(--op)}
.composer .send:hover{background:var(--p);filter:brightness(1.1)}
.vh{position:absolute;width:1px;height:1px;margin:-1px;padding:0;border:0;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
.vh:focus-visible+label{outline:3px solid #0b57d0;outline-offset:2px}
.box{padding:12px;border-top:1px solid #d0d4da;display:flex;flex-wrap:wrap;align-items:center;gap:8px;flex:none}
.box p{margin:0;flex-basis:100%;font-weight:600}
@media (max-width:480px){.root{bottom:12px;right:12px}.root.left{left:12px}.panel{position:fixed;inset:0;width:auto;height:auto;max-width:none;max-height:none;border-radius:0}}
@media (forced-colors:active){.launcher,.panel,.bubble,.badge{border:1px solid CanvasText}}
`;

export function applyStyles(root: ShadowRoot): void {
  try {
    if ("adoptedStyleSheets" in root && "replaceSync" in CSSStyleSheet.prototype) {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(SHEET);
      root.adoptedStyleSheets = [...root.adoptedStyleSheets, sheet];
      return;
    }
  } catch {
    // Constructed sheets refused: the <style> below.
  }
  const style = document.createElement("style");
  style.textContent = SHEET;
  root.appendChild(style);
}

/** The relative luminance of an `rgb(...)` colour, or null when it cannot be read. */
function luminance(rgb: string): number | null {
  const parts = /rgba?\(\s*([\d.]+)[,\s]+([\d.]+)[,\s]+([\d.]+)/.exec(rgb);
  if (!parts) return null;
  const [r, g, b] = [parts[1], parts[2], parts[3]].map((value) => {
    const c = Number(value) / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

/**
 * Sets the site's primary colour (any CSS colour the browser accepts, else the default stays)
 * and, for text on it, white or near-black: whichever has the higher contrast.
 */
export function setPrimary(element: HTMLElement, color: string | undefined): void {
  if (!color || !isColor(color)) return;
  element.style.setProperty("--p", color);
  const probe = document.createElement("span");
  probe.style.color = color;
  element.appendChild(probe);
  const l = luminance(getComputedStyle(probe).color);
  probe.remove();
  if (l === null) return;
  const withWhite = 1.05 / (l + 0.05);
  const withDark = (l + 0.05) / (0.0103 + 0.05); // #1a1a1a
  element.style.setProperty("--op", withWhite >= withDark ? "#fff" : "#1a1a1a");
}

function isColor(value: string): boolean {
  return typeof CSS !== "undefined" && CSS.supports("color", value);
}
