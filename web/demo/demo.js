// The demo page: reads what `nexus up --demo` put in the address's fragment
// (#key=<chat api key>&endpoint=web&agent=<agent token>&supervisor=<supervisor token>), keeps it
// for this tab (sessionStorage, so a reload without the fragment still works), takes it out of
// the address bar, links the consoles, and embeds the widget exactly as a customer's site
// would: a <script src="/widget/nexus-chat.js" data-...> element.
(function () {
  "use strict";

  var STORAGE_KEY = "nexus-demo";

  function fromFragment() {
    var params = new URLSearchParams(location.hash.replace(/^#/, ""));
    var key = params.get("key");
    if (!key) return null;
    return {
      key: key,
      endpoint: params.get("endpoint") || "",
      agent: params.get("agent") || "",
      supervisor: params.get("supervisor") || "",
    };
  }

  function stored() {
    try {
      var access = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
      return access && typeof access.key === "string" && access.key ? access : null;
    } catch (error) {
      return null;
    }
  }

  var access = fromFragment();
  if (access) {
    try {
      sessionStorage.setItem(STORAGE_KEY, JSON.stringify(access));
    } catch (error) {
      // Storage off: the page works until it is reloaded.
    }
    // The key and tokens stay out of the address bar, the history and any shared screenshot.
    history.replaceState(null, "", location.pathname + location.search);
  } else {
    access = stored();
  }

  if (!access) {
    document.getElementById("missing").hidden = false;
    return;
  }

  function consoleLink(linkId, codeId, token) {
    var link = document.getElementById(linkId);
    var code = document.getElementById(codeId);
    if (!token) {
      link.closest("li").hidden = true;
      return;
    }
    link.href = "/console/#token=" + encodeURIComponent(token);
    code.textContent = token;
  }
  consoleLink("agent-link", "agent-token", access.agent);
  consoleLink("supervisor-link", "supervisor-token", access.supervisor);
  document.getElementById("ready").hidden = false;

  // Copy buttons: the clipboard where the page may use it, else the token is selected.
  var copied = document.getElementById("copied");
  Array.prototype.forEach.call(document.querySelectorAll("button[data-copy]"), function (button) {
    button.addEventListener("click", function () {
      var code = document.getElementById(button.getAttribute("data-copy"));
      var text = code.textContent;
      function select() {
        var range = document.createRange();
        range.selectNodeContents(code);
        var selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        copied.textContent = "Selected: press Ctrl+C (or ⌘C) to copy.";
      }
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function () {
          copied.textContent = "Copied.";
        }, select);
      } else {
        select();
      }
    });
  });

  // The embed, as a site would write it. (A script inserted like this has no
  // document.currentScript: the widget finds its element by its src.)
  var script = document.createElement("script");
  script.src = "/widget/nexus-chat.js";
  script.async = true;
  script.setAttribute("data-nexus-url", location.origin);
  script.setAttribute("data-api-key", access.key);
  if (access.endpoint) script.setAttribute("data-endpoint", access.endpoint);
  document.body.appendChild(script);
})();
