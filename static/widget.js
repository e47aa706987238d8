// chatbot_server widget (docs/widget.md): one <script src="https://chat.bank.example/widget.js">
// adds a launcher button and a chat panel to any page. The panel is an iframe of the chat page, so
// the bank's page and the chat keep apart: neither one's CSS or scripts reach the other, and the
// chat page's own CSP (frame-ancestors: security.allowed_origins) decides where it may appear.
// Plain JS, no libraries, no inline script or style attribute, no innerHTML: CSP- and Trusted
// Types-friendly. Calls made before this script loads wait in window.ChatbotWidget (an array).
(function () {
  "use strict";

  var waiting = window.ChatbotWidget;
  if (waiting && !Array.isArray(waiting)) return;  // loaded twice: the first copy serves

  var script = document.currentScript;
  if (!script || !script.src) {
    console.warn("ChatbotWidget: load widget.js with a classic <script src=…> tag (not a module or a bundle).");
    return;
  }
  var base = new URL("./", script.src);        // the chat server, under its prefix if it has one
  var chatOrigin = base.origin;
  var label = script.getAttribute("data-label") || "在线客服";
  var position = script.getAttribute("data-position") === "left" ? "left" : "right";
  var color = script.getAttribute("data-color");
  var STATE_KEY = "chatbot_widget";             // this tab's {open, started, chat}: never a token
  var FAILED_AFTER = 2000;                       // ms after the frame's load event without "ready"
  var SVG = "http://www.w3.org/2000/svg";
  var ICONS = {
    chat: "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2Zm3 6v2h2v-2H7Zm4 0v2h2v-2h-2Zm4 0v2h2v-2h-2Z",
    down: "M6.4 8.6 12 14.2l5.6-5.6L19 10l-7 7-7-7 1.4-1.4Z",
    close: "M6.4 5 12 10.6 17.6 5 19 6.4 13.4 12l5.6 5.6-1.4 1.4-5.6-5.6L6.4 19 5 17.6l5.6-5.6L5 6.4 6.4 5Z"
  };

  var token = null;         // the host's signed customer token: in memory only
  var listeners = { message: [], identity_error: [], open: [], close: [], ready: [] };
  var root = null;
  var panel = null;
  var launcher = null;
  var badge = null;
  var frame = null;
  var ready = false;        // the chat page in the frame said "ready" (and got its init)
  var isOpen = false;
  var wantOpen = false;     // open() before the page had a <body>
  var unread = 0;
  var kept = null;          // the chat page's {conversation, lastSeq}, when its frame has no storage

  // ------------------------------------------------------------------ the public API
  var api = {
    open: function () { wantOpen = true; if (root) show(true); },
    close: function () { wantOpen = false; if (root) hide(); },
    toggle: function () { if (isOpen) api.close(); else api.open(); },
    isOpen: function () { return isOpen; },
    // A token the host's back end signed for its signed-in customer, or null when they sign out.
    identify: function (value) {
      if (value !== null && typeof value !== "string") {
        console.warn("ChatbotWidget: identify() takes the signed token (a string) or null.");
        return;
      }
      token = value || null;
      if (ready) post({ type: "identify", token: token });  // before that, the init carries it
    },
    on: function (event, fn) {
      if (!listeners[event] || typeof fn !== "function") {
        console.warn("ChatbotWidget: on() knows message, identity_error, open, close and ready.");
        return;
      }
      listeners[event].push(fn);
    },
    off: function (event, fn) {
      if (listeners[event]) listeners[event] = listeners[event].filter(function (f) { return f !== fn; });
    },
    // ChatbotWidget.push(["open"]), push(["identify", token]): as before the script loaded.
    push: function () {
      Array.prototype.forEach.call(arguments, run);
      return 0;
    }
  };

  function run(command) {
    var name = Array.isArray(command) ? command[0] : null;
    if (typeof name !== "string" || name === "push" || !Object.prototype.hasOwnProperty.call(api, name)) {
      console.warn("ChatbotWidget: unknown command", command);
      return;
    }
    api[name].apply(api, command.slice(1));
  }

  function emit(event, payload) {
    listeners[event].slice().forEach(function (fn) {
      try { fn(payload); } catch (e) { setTimeout(function () { throw e; }); }  // the host's bug, not ours
    });
  }

  // ------------------------------------------------------------------ talking to the frame
  // To the chat page's origin only, and only its frame's messages are heard (never "*").
  function post(message) {
    if (frame && frame.contentWindow) frame.contentWindow.postMessage(message, chatOrigin);
  }

  window.addEventListener("message", function (event) {
    if (!frame || event.source !== frame.contentWindow || event.origin !== chatOrigin) return;
    var data = event.data;
    if (!data || typeof data !== "object" || typeof data.type !== "string") return;
    if (data.type === "ready") {
      ready = true;
      panel.setAttribute("data-state", "ready");
      post({ type: "init", token: token, state: kept });
      if (isOpen) post({ type: "open", focus: frameFocused() });
      emit("ready");
    } else if (data.type === "message" && typeof data.kind === "string" && typeof data.text === "string") {
      if (!isOpen && data.kind !== "greeting") setUnread(unread + 1);
      emit("message", { kind: data.kind, text: data.text });
    } else if (data.type === "identity_error" && typeof data.code === "string") {
      emit("identity_error", { code: data.code });
    } else if (data.type === "close") {
      api.close();
    } else if (data.type === "state") {
      // The browser gives the chat's frame no storage of its own (third-party storage blocked):
      // this tab keeps its conversation for it, so a reload or the next page carries on.
      var ok = typeof data.conversation === "string" && data.conversation.length <= 128 && typeof data.lastSeq === "number";
      kept = ok ? { conversation: data.conversation, lastSeq: data.lastSeq } : null;
      saveState();
    }
  });

  // ------------------------------------------------------------------ the launcher and the panel
  function icon(name) {
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    svg.setAttribute("class", "cbw-icon cbw-icon-" + name);
    var path = document.createElementNS(SVG, "path");
    path.setAttribute("d", ICONS[name]);
    path.setAttribute("fill", "currentColor");
    svg.appendChild(path);
    return svg;
  }

  function element(tag, className, text) {
    var el = document.createElement(tag);
    el.className = className;
    if (text) el.textContent = text;
    return el;
  }

  function build() {
    root = element("div", "cbw cbw-" + position);
    root.hidden = true;  // shown once its stylesheet is in (no unstyled flash)
    // CSSOM, not a style attribute: allowed by a host CSP without 'unsafe-inline'.
    if (color && window.CSS && CSS.supports("color", color)) root.style.setProperty("--cbw-brand", color);

    panel = element("div", "cbw-panel");
    panel.setAttribute("role", "dialog");
    panel.setAttribute("aria-label", label);
    panel.setAttribute("data-state", "loading");
    panel.id = "cbw-panel";
    panel.hidden = true;
    panel.appendChild(element("p", "cbw-note cbw-loading", "正在打开" + label + "…"));
    panel.appendChild(element("p", "cbw-note cbw-failed", "抱歉," + label + "暂时无法打开,请稍后再试。"));
    // Until the chat page is up (its own header has the 收起 button), and when it cannot load.
    var close = element("button", "cbw-close");
    close.type = "button";
    close.setAttribute("aria-label", "关闭" + label);
    close.appendChild(icon("close"));
    close.addEventListener("click", api.close);
    panel.appendChild(close);

    launcher = element("button", "cbw-launcher");
    launcher.type = "button";
    launcher.setAttribute("aria-controls", panel.id);
    launcher.setAttribute("aria-expanded", "false");
    launcher.appendChild(icon("chat"));
    launcher.appendChild(icon("down"));
    launcher.appendChild(element("span", "cbw-label", label));
    badge = element("span", "cbw-badge");
    badge.hidden = true;
    badge.setAttribute("aria-hidden", "true");
    launcher.appendChild(badge);
    launcher.addEventListener("click", api.toggle);
    setUnread(0);

    root.appendChild(panel);
    root.appendChild(launcher);
    document.body.appendChild(root);

    var sheet = document.createElement("link");
    sheet.rel = "stylesheet";
    sheet.href = base.href + "widget.css";
    sheet.addEventListener("load", function () { root.hidden = false; });
    sheet.addEventListener("error", function () {
      console.warn("ChatbotWidget: " + sheet.href + " did not load; a host CSP must allow it in style-src (docs/widget.md).");
    });
    document.head.appendChild(sheet);

    // Within this tab the chat goes on from page to page: a started chat is loaded again (for its
    // unread badge), and shown again if it was open.
    var saved = loadState();
    kept = saved.chat;
    if (saved.started) makeFrame();
    if (saved.open || wantOpen) show(false);
  }

  function makeFrame() {
    frame = document.createElement("iframe");
    frame.className = "cbw-frame";
    frame.title = label;
    // Our own page, with no more than it needs: no top navigation, no popups, no downloads.
    frame.setAttribute("sandbox", "allow-scripts allow-same-origin allow-forms");
    frame.referrerPolicy = "no-referrer";  // the host page's address (and its query) is not ours to log
    frame.src = base.href + "?embed=1&parent=" + encodeURIComponent(location.origin);
    frame.addEventListener("load", function () {
      // Loaded, and still no word from the chat page a little later (its "ready" and the frame's
      // load event take different ways here): refused on this page (frame-ancestors), or down.
      setTimeout(function () {
        if (ready) return;
        panel.setAttribute("data-state", "failed");
        console.warn("ChatbotWidget: the chat page did not open in the frame. Is " + location.origin +
          " listed in security.allowed_origins of the chat server? (docs/widget.md)");
      }, FAILED_AFTER);
    });
    panel.appendChild(frame);
    saveState();
  }

  function show(focus) {
    if (!frame) makeFrame();
    isOpen = true;
    panel.hidden = false;
    root.setAttribute("data-open", "");
    document.documentElement.classList.add("cbw-open");  // a phone's full-screen panel: no page scroll behind
    launcher.setAttribute("aria-expanded", "true");
    setUnread(0);
    saveState();
    if (focus) frame.focus();
    if (ready) post({ type: "open", focus: focus });
    emit("open");
  }

  function hide() {
    if (!isOpen) return;
    var hadFocus = frameFocused() || panel.contains(document.activeElement);
    isOpen = false;
    panel.hidden = true;
    root.removeAttribute("data-open");
    document.documentElement.classList.remove("cbw-open");
    launcher.setAttribute("aria-expanded", "false");
    saveState();
    if (hadFocus) launcher.focus();
    emit("close");
  }

  function frameFocused() {
    return Boolean(frame) && document.activeElement === frame;
  }

  function setUnread(count) {
    unread = count;
    badge.hidden = count === 0;
    badge.textContent = count > 99 ? "99+" : String(count);
    launcher.setAttribute("aria-label", count ? label + "," + count + " 条未读消息" : label);
  }

  function loadState() {
    try {
      var saved = JSON.parse(sessionStorage.getItem(STATE_KEY) || "null");
      if (saved && typeof saved === "object") {
        var chat = saved.chat && typeof saved.chat === "object" ? saved.chat : null;
        return { open: saved.open === true, started: saved.started === true, chat: chat };
      }
    } catch (e) { /* storage blocked: each page starts closed */ }
    return { open: false, started: false, chat: null };
  }

  function saveState() {
    try {
      sessionStorage.setItem(STATE_KEY, JSON.stringify({ open: isOpen, started: Boolean(frame), chat: kept }));
    } catch (e) { /* storage blocked */ }
  }

  // ------------------------------------------------------------------ start
  window.ChatbotWidget = api;
  if (Array.isArray(waiting)) waiting.forEach(run);  // the calls made before we loaded, in order
  if (document.body) build();
  else document.addEventListener("DOMContentLoaded", build);
})();
