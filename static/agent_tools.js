// The console's tools: canned replies (/shortcut), the typing notice, new-request alerts (sound and
// desktop notification), the transcript export link and the bot's suggestion. Uses what agent.js
// exposes (window.agentConsole) and its events (agent:frame, agent:select). Text goes in with
// textContent or into the textarea's value, never as HTML.
(function () {
  "use strict";
  var app = window.agentConsole;
  if (!app) return;
  var config = app.config;
  var form = document.getElementById("reply-form");
  var input = document.getElementById("reply-input");
  var list = document.getElementById("canned-list");
  var exportLink = document.getElementById("export-transcript");
  var suggestionEl = document.getElementById("suggestion");
  var toggle = document.getElementById("notify-toggle");
  var TYPING_INTERVAL = 2000;  // the server drops more than one notice per 2 s per conversation
  var MUTE_KEY = "chatbot.agent.alerts";

  // ------------------------------------------------------------ canned replies
  var canned = config.canned || [];
  var offered = [];
  var active = -1;

  function expand(text) {
    var conv = app.selected() && app.conversation(app.selected());
    var values = {
      name: (conv && conv.customer && conv.customer.name) || "",  // else "您好,…" still reads well
      agent: config.agent.name,
      hotline: config.hotline || ""
    };
    return text.replace(/\{(name|agent|hotline)\}/g, function (_, key) { return values[key]; });
  }

  // The "/word" the caret stands after (at the start or after a space), or null.
  function token() {
    var before = input.value.slice(0, input.selectionStart);
    var m = /(^|\s)(\/[^\s\/]*)$/.exec(before);
    return m ? m[2] : null;
  }

  function closeList() { list.hidden = true; offered = []; active = -1; list.textContent = ""; }

  function offer() {
    var typed = token();
    offered = typed === null ? [] : canned.filter(function (c) { return c.shortcut.indexOf(typed) === 0; });
    if (!offered.length) { closeList(); return; }
    active = 0;
    list.textContent = "";
    offered.forEach(function (c, n) {
      var li = document.createElement("li");
      li.setAttribute("role", "option");
      li.id = "canned-" + n;
      var key = document.createElement("span");
      key.className = "canned-shortcut";
      key.textContent = c.shortcut + " " + c.title;
      var text = document.createElement("span");
      text.className = "canned-text";
      text.textContent = expand(c.text);
      li.appendChild(key);
      li.appendChild(text);
      li.addEventListener("mousedown", function (event) { event.preventDefault(); insert(n); });  // keep the focus
      list.appendChild(li);
    });
    list.hidden = false;
    mark();
  }

  function mark() {
    Array.prototype.forEach.call(list.children, function (li, n) {
      li.setAttribute("aria-selected", n === active ? "true" : "false");
    });
  }

  function insert(n) {
    var typed = token();
    var chosen = offered[n];
    if (!chosen || typed === null) { closeList(); return; }
    var end = input.selectionStart;
    var start = end - typed.length;
    var text = expand(chosen.text);
    input.value = input.value.slice(0, start) + text + input.value.slice(end);
    input.selectionStart = input.selectionEnd = start + text.length;
    closeList();
    input.focus();  // to edit before sending
  }

  // Capture on the form runs before agent.js's Enter-to-send listener on the textarea.
  form.addEventListener("keydown", function (event) {
    if (event.target !== input || list.hidden || event.isComposing) return;
    var handled = true;
    if (event.key === "ArrowDown") active = (active + 1) % offered.length;
    else if (event.key === "ArrowUp") active = (active - 1 + offered.length) % offered.length;
    else if (event.key === "Enter" || event.key === "Tab") insert(active);
    else if (event.key === "Escape") closeList();
    else handled = false;
    if (handled) { event.preventDefault(); event.stopPropagation(); mark(); }
  }, true);
  input.addEventListener("blur", closeList);

  // ------------------------------------------------------------ typing notice
  var lastTyping = {};
  input.addEventListener("input", function () {
    offer();
    var id = app.selected();
    if (!id || !input.value.trim() || input.value.charAt(0) === "/") return;
    var now = Date.now();
    if (lastTyping[id] && now - lastTyping[id] < TYPING_INTERVAL) return;
    lastTyping[id] = now;
    app.send({ type: "typing", conversation: id });
  });

  // ------------------------------------------------------------ alerts: sound and notification
  var audio = null;
  function alertsOn() { return localStorage.getItem(MUTE_KEY) === "on"; }

  function showToggle() {
    var on = alertsOn();
    toggle.setAttribute("aria-pressed", on ? "true" : "false");
    toggle.textContent = on ? "关闭提醒" : "开启提醒";
  }

  function unlockAudio() {
    // Browsers start audio only after a user gesture: make the context on the first one.
    if (!audio && (window.AudioContext || window.webkitAudioContext)) {
      audio = new (window.AudioContext || window.webkitAudioContext)();
    }
    if (audio && audio.state === "suspended") audio.resume();
  }

  function beep() {
    if (!audio) return;
    var osc = audio.createOscillator();
    var gain = audio.createGain();
    osc.frequency.value = 880;
    gain.gain.setValueAtTime(0.15, audio.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.25);
    osc.connect(gain);
    gain.connect(audio.destination);
    osc.start();
    osc.stop(audio.currentTime + 0.25);
  }

  function alertAbout(conversation, body) {
    if (!alertsOn()) return;
    beep();
    if (!window.Notification || Notification.permission !== "granted") return;
    if (!document.hidden && document.hasFocus()) return;  // the agent sees the console already
    var note = new Notification("客服工作台", { body: body, tag: "chatbot-" + conversation });
    note.onclick = function () { window.focus(); note.close(); };
  }

  toggle.addEventListener("click", function () {
    unlockAudio();
    localStorage.setItem(MUTE_KEY, alertsOn() ? "off" : "on");
    if (alertsOn() && window.Notification && Notification.permission === "default") Notification.requestPermission();
    showToggle();
  });
  document.addEventListener("click", unlockAudio, { once: true });
  document.addEventListener("keydown", unlockAudio, { once: true });
  showToggle();

  // ------------------------------------------------------------ export link and suggestions
  var suggestions = {};  // conversation -> the latest suggestion frame

  function showSuggestion() {
    var s = suggestions[app.selected()];
    suggestionEl.hidden = !s;
    if (!s) return;
    document.getElementById("suggestion-intent").textContent = s.intent + " · " + Math.round(s.score * 100) + "%";
    document.getElementById("suggestion-answer").textContent = s.answer;
  }

  document.getElementById("use-suggestion").addEventListener("click", function () {
    var s = suggestions[app.selected()];
    if (!s) return;
    input.value = s.answer;
    input.focus();
  });

  document.addEventListener("agent:select", function (event) {
    var id = event.detail;
    exportLink.hidden = !id;
    if (id) exportLink.href = config.exportPath.replace("{id}", encodeURIComponent(id));
    closeList();
    showSuggestion();
  });

  document.addEventListener("agent:frame", function (event) {
    var m = event.detail;
    switch (m.type) {
      case "queue_added":
        alertAbout(m.item.conversation, "新的转人工请求:" + (m.item.preview || "(用户未留言)"));
        break;
      case "assigned":
        alertAbout(m.conversation, "有一位用户已分配给您,请及时接待。");
        break;
      case "suggestion":
        suggestions[m.conversation] = m;
        if (m.conversation === app.selected()) showSuggestion();
        break;
      case "closed":
        delete suggestions[m.conversation];
        delete lastTyping[m.conversation];
        showSuggestion();
        break;
    }
  });
}());
