// chatbot_server chat page. Plain JS, no libraries. User text is only ever inserted as text.
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("chat-config").textContent);
  var texts = config.texts;
  var STORAGE_KEY = "chatbot_server.conversation";

  var messagesEl = document.getElementById("messages");
  var historyEl = messagesEl.parentNode;
  var statusEl = document.getElementById("status");
  var thinkingEl = document.getElementById("thinking");
  var quickEl = document.getElementById("quick");
  var form = document.getElementById("composer");
  var input = document.getElementById("input");
  var sendButton = document.getElementById("send");
  var handoffButton = document.getElementById("handoff");
  var queueStatusEl = document.getElementById("queue-status");
  var logoEl = document.querySelector(".chat-logo");
  var olderButton = document.getElementById("load-older");
  var stopButton = document.getElementById("stop");
  var embedClose = document.getElementById("embed-close");
  var SUGGESTIONS_LABEL = "猜您想问";
  var PENDING_TEXT = "发送中…";

  var socket = null;
  var retries = 0;
  var reconnectTimer = null;
  var stopped = false;          // the server asked us not to reconnect by ourselves (idle)
  var resumeTarget = null;      // the conversation the current socket asked to carry on
  var pending = {};             // client id -> {text, el}: sent, not yet confirmed by the server
  var pendingOrder = [];
  var waitingReplies = 0;
  var mode = "bot";             // who answers: "bot", "queued" (waiting for a human) or "agent"
  var shown = {};               // seq -> true: every frame on screen, so a page never repeats one
  var older = null;             // {before, after}: older frames the server still has for us
  var placing = null;           // while an older frame is drawn: {before: node, seq} (see placeOld)
  var state = loadState();      // {conversation, lastSeq}: lastSeq is the newest frame on screen
  // A (re)loaded page shows nothing yet, so it asks for the whole conversation, not just what came
  // after the saved lastSeq; otherwise a reload would resume the conversation with an empty screen.
  var hadConversation = Boolean(state.conversation);
  // Frames up to this seq were shown before (this tab, before a reload): replayed, they are not news.
  var announcedSeq = state.lastSeq;
  state.lastSeq = 0;

  // Embedded by widget.js (docs/widget.md): the server names the embedding page's origin only when
  // it is allowed to embed us. Messages go to that origin alone and are taken from the parent
  // window at that origin alone. Opened on its own, not in a frame, this is the plain chat page.
  var parentOrigin = config.embed && window.parent !== window ? config.embed.parentOrigin : null;
  var identity = null;          // the host's signed customer token: in memory only, never stored
  var refused = false;          // the server refused the token (close 4004): wait for identify
  var held = null;              // a verified customer's frames, held until the socket names its conversation
  var ownStorage = storageWorks();
  // After a verified customer's socket landed in another conversation by its greeting: a new one,
  // or the first frame of a replay of theirs ("resumed" ends it). Until one of the two is plain,
  // what is announced waits here (a replay is history, not news).
  var doubt = null;

  function loadState() {
    try {
      var saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
      if (saved && typeof saved.conversation === "string" && typeof saved.lastSeq === "number") return saved;
    } catch (e) { /* storage blocked or corrupt: start afresh */ }
    return { conversation: null, lastSeq: 0 };
  }

  function saveState() {
    if (ownStorage) {
      try { sessionStorage.setItem(STORAGE_KEY, JSON.stringify(state)); } catch (e) { /* private mode */ }
    } else {
      // A frame of another site that the browser gives no storage (Safari, Chrome incognito, third-party
      // cookies blocked): the embedding widget keeps this tab's state for us (docs/widget.md).
      tell({ type: "state", conversation: state.conversation, lastSeq: state.lastSeq });
    }
  }

  function storageWorks() {
    try {
      sessionStorage.setItem(STORAGE_KEY + ".probe", "1");
      sessionStorage.removeItem(STORAGE_KEY + ".probe");
      return true;
    } catch (e) {
      return false;
    }
  }

  function newId() {
    var bytes = new Uint8Array(9);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function socketUrl() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var url = scheme + location.host + config.wsPath;
    resumeTarget = state.conversation;
    var query = [];
    if (state.conversation) {
      query.push("conversation=" + encodeURIComponent(state.conversation) + "&last_seq=" + state.lastSeq);
    }
    if (identity) query.push("identity=" + encodeURIComponent(identity));
    return query.length ? url + "?" + query.join("&") : url;
  }

  function setStatus(kind, text) {
    statusEl.className = "status status-" + kind;
    statusEl.textContent = text;
    document.body.setAttribute("data-connection", kind);
  }

  function formatTime(ts) {
    var d = ts ? new Date(ts) : new Date();
    return ("0" + d.getHours()).slice(-2) + ":" + ("0" + d.getMinutes()).slice(-2);
  }

  function isNearBottom() {
    return historyEl.scrollHeight - historyEl.scrollTop - historyEl.clientHeight < 80;
  }

  function scrollDown() { historyEl.scrollTop = historyEl.scrollHeight; }

  // Who said it, for screen readers (sighted users see it from the bubble's side and colour).
  var SPEAKER = { user: "我", bot: "智能客服", greeting: "智能客服", agent: "人工客服", system: "系统消息", error: "提示" };

  function avatar(kind, name) {
    var el;
    if (kind === "agent") {
      el = document.createElement("span");
      el.textContent = (name || SPEAKER.agent).charAt(0);
    } else {
      // The bot wears the page's logo, whatever the site configured.
      el = logoEl ? logoEl.cloneNode(true) : document.createElement("span");
      el.removeAttribute("id");
    }
    el.className = "avatar avatar-" + kind;
    el.setAttribute("aria-hidden", "true");
    if (el.tagName === "IMG") el.alt = "";
    return el;
  }

  // Build one message; every piece of text goes in with textContent, never as markup.
  function addMessage(kind, text, ts, extra) {
    var stick = isNearBottom();
    var li = document.createElement("li");
    li.className = "msg msg-" + kind;
    var agentName = extra && extra.agent;
    if (kind === "bot" || kind === "greeting" || kind === "agent") li.appendChild(avatar(kind, agentName));
    var body = document.createElement("div");
    body.className = "msg-body";
    var who = document.createElement("span");
    who.className = kind === "agent" ? "who" : "who visually-hidden";
    who.textContent = agentName || SPEAKER[kind] || SPEAKER.bot;
    body.appendChild(who);
    var bubble = document.createElement("div");
    bubble.className = "bubble";
    bubble.textContent = text;
    body.appendChild(bubble);
    if (kind !== "system") {
      var meta = document.createElement("time");
      meta.className = "meta";
      setTime(meta, ts);
      body.appendChild(meta);
    }
    if (extra && extra.suggestions && extra.suggestions.length) body.appendChild(suggestionsBox(extra.suggestions));
    li.appendChild(body);
    if (placing) {
      // An older frame (a history page): above the newer ones, keeping what the user reads in view.
      var height = historyEl.scrollHeight;
      li.setAttribute("data-seq", placing.seq);
      messagesEl.insertBefore(li, placing.before);
      historyEl.scrollTop += historyEl.scrollHeight - height;
      return li;
    }
    if (typeof currentSeq === "number") li.setAttribute("data-seq", currentSeq);
    // What the server sends goes above the questions still being sent, so the page shows the
    // server's order (the order a reload replays); a question just typed goes last.
    messagesEl.insertBefore(li, sending ? null : firstPending());
    if (stick || kind === "user") scrollDown();
    return li;
  }

  function firstPending() {
    return pendingOrder.length ? pending[pendingOrder[0]].el : null;
  }

  function suggestionsBox(suggestions) {
    var box = document.createElement("div");
    box.className = "suggestions";
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", SUGGESTIONS_LABEL);
    var label = document.createElement("span");
    label.className = "suggestions-label";
    label.setAttribute("aria-hidden", "true");
    label.textContent = SUGGESTIONS_LABEL;
    box.appendChild(label);
    suggestions.forEach(function (q) { if (typeof q === "string" && q) box.appendChild(chip(q)); });
    return box;
  }

  // ------------------------------------------------------------ replies being written (streamed)
  // reply id -> {li, text, replyTo}. The text grows by deltas placed by their offset (UTF-16 units,
  // which is what a JS string's length counts): a delta the page already has (a catch-up after a
  // reconnect) is dropped, a partly known one trimmed. The final "reply" frame replaces the text.
  var writing = {};

  function startWriting(f) {
    thinkingEl.hidden = true;  // the answer is visibly coming: no dots over it
    if (writing[f.id]) return;  // a catch-up after a reconnect: we have it already
    var li = null;
    Object.keys(writing).forEach(function (id) {
      // The process writing an answer died and the next one writes it again: same bubble, afresh.
      if (f.reply_to && writing[id].replyTo === f.reply_to) { li = writing[id].li; delete writing[id]; }
    });
    if (!li) {
      li = addMessage("bot", "", f.ts);
      li.classList.add("writing");
    }
    li.querySelector(".bubble").textContent = "";
    writing[f.id] = { li: li, text: "", replyTo: f.reply_to || null };
    stopButton.hidden = false;
  }

  function growWriting(f) {
    var w = writing[f.id];
    if (!w || typeof f.offset !== "number" || typeof f.text !== "string" || f.offset > w.text.length) return;
    var skip = w.text.length - f.offset;
    if (skip >= f.text.length) return;
    var stick = isNearBottom();
    w.text += f.text.slice(skip);
    w.li.querySelector(".bubble").textContent = w.text;
    if (stick) scrollDown();
  }

  // The stored reply that ends a written one: its final text, time, seq and suggestions.
  function finishWriting(f) {
    var w = writing[f.id];
    delete writing[f.id];
    stopButton.hidden = !Object.keys(writing).length;
    var li = w.li;
    li.classList.remove("writing");
    if (typeof currentSeq === "number") li.setAttribute("data-seq", currentSeq);
    li.querySelector(".bubble").textContent = f.msg;
    var meta = li.querySelector(".meta");
    setTime(meta, f.ts);
    if (f.stopped) meta.textContent += " · 已停止生成";
    if (f.suggestions && f.suggestions.length) li.querySelector(".msg-body").appendChild(suggestionsBox(f.suggestions));
  }

  function setTime(el, ts) {
    el.textContent = formatTime(ts);
    var d = ts ? new Date(ts) : new Date();
    el.dateTime = d.toISOString();
    el.title = d.toLocaleString("zh-CN");
  }

  function chip(question) {
    var b = document.createElement("button");
    b.type = "button";
    b.className = "chip";
    b.textContent = question;
    b.addEventListener("click", function () { send(question); });
    return b;
  }

  function setThinking(on) {
    showThinking(Math.max(0, waitingReplies + (on ? 1 : -1)));
  }

  function showThinking(count) {
    var stick = isNearBottom();
    waitingReplies = count;
    thinkingEl.hidden = waitingReplies === 0;
    if (!thinkingEl.hidden && stick) scrollDown();
  }

  // 客服正在输入…: shown while the agent types; gone when their line arrives or after 5 s.
  var typingEl = document.getElementById("typing");
  var typingTimer = null;
  function agentTyping(on) {
    if (!typingEl) return;  // a custom template without the indicator
    clearTimeout(typingTimer);
    var stick = isNearBottom();
    typingEl.hidden = !on;
    if (on) {
      typingTimer = setTimeout(function () { typingEl.hidden = true; }, 5000);
      if (stick) scrollDown();
    }
  }

  function clearThinking() { waitingReplies = 0; thinkingEl.hidden = true; }

  function connect() {
    clearTimeout(reconnectTimer);
    stopped = false;
    setStatus("connecting", texts.connecting);
    var ws;
    try { ws = new WebSocket(socketUrl()); } catch (e) { scheduleReconnect(); return; }
    socket = ws;
    var token = identity;       // what this socket was opened with
    // A verified customer may land in their conversation from another device, replayed before the
    // "resumed" frame that names it: hold its frames until then (see onFrame).
    held = identity ? [] : null;
    ws.onopen = function () {
      retries = 0;
      setStatus("connected", texts.connected);
      sendButton.disabled = false;
    };
    ws.onmessage = function (event) {
      if (socket !== ws) return;  // a socket replaced by identify()
      var data;
      try { data = JSON.parse(event.data); } catch (e) { return; }
      if (data && typeof data === "object") onFrame(data);
    };
    ws.onclose = function (event) {
      if (socket !== ws) return;
      socket = null;
      dropHeld();
      doubt = null;
      clearThinking();
      setStatus("disconnected", texts.disconnected);
      if (event.code === 4000) { stopped = true; return; }  // idle: reconnect when the user comes back
      if (event.code === 4002) { stopped = true; return; }  // carried on in another tab: leave it there
      if (event.code === 4004) {                            // identity refused: only a new token helps
        if (identity !== token) connect(); else refuse();   // (one came while this socket was refused)
        return;
      }
      scheduleReconnect();
    };
    ws.onerror = function () { /* onclose follows and handles it */ };
  }

  function scheduleReconnect() {
    clearTimeout(reconnectTimer);
    var delay = Math.min(15000, 500 * Math.pow(2, retries)) * (0.75 + Math.random() * 0.5);
    retries += 1;
    reconnectTimer = setTimeout(connect, delay);
  }

  var currentSeq = null;         // the seq of the frame being drawn (its element carries it)
  var sending = false;           // while send() draws the question just typed (it goes last)

  // A verified customer's socket: its frames wait until it says which conversation it is in
  // (greeting, conversation_expired, resumed). Another one than on screen (theirs, from another
  // device, or a new one) replaces what the screen shows; its replay is history, not news.
  function onFrame(f) {
    if (held) {
      if (typeof f.conversation !== "string") { held.push(f); return; }
      var frames = held;
      held = null;
      if (f.conversation !== state.conversation) {
        clearScreen();
        enterConversation(f.conversation);
        if (f.event === "resumed" && typeof f.last_seq === "number") announcedSeq = f.last_seq;
        else doubt = [];
      }
      frames.forEach(handleFrame);
    }
    handleFrame(f);
  }

  // The socket closed before naming its conversation: its notices and errors (a refused token)
  // are shown, frames of a conversation it never named are not.
  function dropHeld() {
    var frames = held || [];
    held = null;
    frames.forEach(function (f) {
      if (typeof f.seq !== "number" && f.event !== "history_more" && f.event !== "history_done") handleFrame(f);
    });
  }

  function enterConversation(conversation) {
    writing = {};
    stopButton.hidden = true;
    state.conversation = conversation;
    state.lastSeq = 0;
    announcedSeq = 0;
    shown = {};
    showOlder(null);
  }

  // Everything on screen but the questions still being sent (they go to the conversation now shown).
  function clearScreen() {
    Array.prototype.slice.call(messagesEl.children).forEach(function (li) {
      if (!li.classList.contains("pending")) messagesEl.removeChild(li);
    });
    clearThinking();
    setMode("bot");
  }

  function handleFrame(f) {
    if (f.conversation && f.conversation !== state.conversation) enterConversation(f.conversation);
    currentSeq = null;
    var news = true;  // not shown by this tab before: the embedding page hears of it
    if (typeof f.seq === "number") {
      if (shown[f.seq]) return;             // already shown (replayed after a reconnect)
      shown[f.seq] = true;
      if (f.seq < state.lastSeq) { placeOld(f); return; }  // from a history page: older
      state.lastSeq = f.seq;
      currentSeq = f.seq;
      news = f.seq > announcedSeq;
      if (news) announcedSeq = f.seq;
    }
    // For static/leave_message.js (the 留言 form, 取消排队): the frame, and whether it is news.
    document.dispatchEvent(new CustomEvent("chatbot:frame", { detail: { frame: f, news: news } }));
    saveState();
    switch (f.type) {
      case "greeting":
        addMessage("greeting", f.msg, f.ts);
        if (news) announce("greeting", f.msg);
        // A greeting for another conversation than the one asked for means a fresh start (not a
        // replay): the server knows nothing of what is pending, so send it now.
        if (f.conversation !== resumeTarget) resendPending();
        break;
      case "user":
        confirmUser(f);
        break;
      case "typing":
        if (f.who === "agent") { agentTyping(true); break; }  // the holding agent types (transient)
        settleDoubt();  // live: a replay has no typing frames
        showThinking(Math.max(1, waitingReplies));
        break;
      case "reply_start":
        startWriting(f);
        break;
      case "reply_delta":
        growWriting(f);
        break;
      case "reply":
        setThinking(false);
        if (f.id && writing[f.id]) finishWriting(f);
        else addMessage("bot", f.msg, f.ts, { suggestions: f.suggestions });
        if (news) announce("bot", f.msg);
        break;
      case "agent":
        setThinking(false);
        agentTyping(false);
        addMessage("agent", f.msg, f.ts, { agent: f.agent || "人工客服" });
        if (news) announce("agent", f.msg);
        break;
      case "system":
        if (f.event === "queue_position") { setMode("queued", f.queue_position, f.estimated_wait); break; }
        if (f.event === "mode") {
          // After a resume: who answers now. A request that lapsed while the page was away
          // (agents.queue_grace) leaves the replayed "queued" notice behind: say so, enable 转人工.
          if (mode === "queued" && f.mode === "bot") addMessage("system", "您之前的转人工请求已失效,如需人工服务,请再次点击「转人工」。");
          setMode(f.mode);
          break;
        }
        if (f.event === "history_more") { showOlder({ before: f.before, after: f.after }); break; }
        if (f.event === "history_done") { showOlder(null); break; }
        if (f.msg) addMessage("system", f.msg, f.ts);
        // Notices about this connection (closing, taken_over) are not news for the embedding page.
        if (f.msg && news && f.event !== "closing" && f.event !== "taken_over") announce("system", f.msg);
        if (f.event === "resumed") { doubt = null; resendPending(); }
        if (f.event === "queued") setMode("queued", f.queue_position, f.estimated_wait);
        if (f.event === "agent_joined") setMode("agent");
        if (window.chatbotRating && f.event === "rating_request") window.chatbotRating.show(f.agent, sendRating);
        if (window.chatbotRating && f.event === "rating_done") window.chatbotRating.hide();
        if (f.event === "agent_left" || f.event === "agent_handback" || f.event === "handoff_cancelled") setMode("bot");
        break;
      case "error":
        setThinking(false);
        addMessage("error", f.msg, f.ts);
        if (older && olderButton) olderButton.disabled = false;  // a refused page may be asked again
        // The token was refused (identity_required, _malformed, _bad_signature, _expired): close 4004 follows.
        if (typeof f.code === "string" && f.code.indexOf("identity_") === 0) tell({ type: "identity_error", code: f.code });
        break;
      default:
        if (f.msg) addMessage(f.talk ? "bot" : "system", String(f.msg), f.ts);
        if (f.msg && news) announce(f.talk ? "bot" : "system", String(f.msg));
    }
  }

  // An older frame goes above the first shown frame with a higher seq. It is only drawn: the
  // notices in it (queued, agent_joined...) are history, not news, so they change no state.
  function placeOld(f) {
    var next = null;
    for (var el = messagesEl.firstElementChild; el; el = el.nextElementSibling) {
      var seq = Number(el.getAttribute("data-seq"));
      if (el.hasAttribute("data-seq") && seq > f.seq) { next = el; break; }
    }
    placing = { before: next, seq: f.seq };
    try {
      var kind = { greeting: "greeting", user: "user", reply: "bot", agent: "agent" }[f.type] || "system";
      if (f.msg) addMessage(kind, String(f.msg), f.ts, { agent: f.type === "agent" ? f.agent || "人工客服" : null });
    } finally {
      placing = null;
    }
  }

  // The 加载更早的消息 button: shown while the server has older frames for us.
  function showOlder(range) {
    older = range;
    if (!olderButton) return;
    olderButton.hidden = !range;
    olderButton.disabled = false;
  }

  // 停止生成: ends the answer being written (the newest); what was written stays, marked.
  stopButton.addEventListener("click", function () {
    var ids = Object.keys(writing);
    if (!ids.length || !socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ type: "stop", id: ids[ids.length - 1] }));
  });

  if (olderButton) {
    olderButton.addEventListener("click", function () {
      if (!older || !socket || socket.readyState !== WebSocket.OPEN) return;
      olderButton.disabled = true;  // one page at a time; the answer ends with history_more or history_done
      socket.send(JSON.stringify({ type: "history", before: older.before, after: older.after }));
    });
  }

  // While waiting for or talking to a human the bot is silent: no "thinking" dots then.
  // `wait`: the server's estimate in seconds (docs/agents.md, "Routing"), in whole minutes as the server words it.
  function setMode(next, position, wait) {
    mode = next;
    if (next !== "bot") clearThinking();
    if (handoffButton) handoffButton.disabled = next !== "bot";
    document.dispatchEvent(new CustomEvent("chatbot:mode", { detail: { mode: next } }));
    if (next === "queued" && position) {
      queueStatusEl.textContent = "正在等待人工客服," + (position > 1 ? "您前面还有 " + (position - 1) + " 位用户" : "您是下一位") +
        (Math.round((wait || 0) / 60) ? ",预计等待约 " + Math.round(wait / 60) + " 分钟" : "");
      queueStatusEl.hidden = false;
    } else {
      queueStatusEl.hidden = true;
    }
  }

  function confirmUser(f) {
    var entry = f.id && pending[f.id];
    if (entry) {
      settleDoubt();  // our own message: the conversation is live
      entry.el.setAttribute("data-seq", f.seq);
      entry.el.classList.remove("pending");
      setTime(entry.el.querySelector(".meta"), f.ts);
      delete pending[f.id];
      pendingOrder = pendingOrder.filter(function (id) { return id !== f.id; });
      messagesEl.insertBefore(entry.el, firstPending());  // confirmed: above those still being sent
    } else {
      addMessage("user", f.msg, f.ts);   // replayed after a page reload
    }
  }

  // The rating card's answer (rating.js): false if the socket is not open (the card stays).
  function sendRating(data) {
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify(data));
    return true;
  }

  function send(text) {
    text = (text || "").trim();
    if (!text) return;
    if (text.length > config.maxTextLength) text = text.slice(0, config.maxTextLength);
    quickEl.hidden = true;
    settleDoubt();
    var id = newId();
    sending = true;
    var el;
    try { el = addMessage("user", text); } finally { sending = false; }
    el.classList.add("pending");
    el.querySelector(".meta").textContent = PENDING_TEXT;
    pending[id] = { text: text, el: el };
    pendingOrder.push(id);
    if (socket && socket.readyState === WebSocket.OPEN) {
      if (mode === "bot") setThinking(true);
      socket.send(JSON.stringify({ type: "message", text: text, id: id }));
    } else if (stopped && !refused) {
      connect();
    }
  }

  // After a reconnect, messages the server never confirmed are sent again with the same id;
  // the server ignores ids it has already answered. Offline they only say "sending", not "thinking".
  function resendPending() {
    if (!pendingOrder.length || !socket || socket.readyState !== WebSocket.OPEN) return;
    pendingOrder.forEach(function (id) {
      socket.send(JSON.stringify({ type: "message", text: pending[id].text, id: id }));
    });
    if (mode === "bot") showThinking(pendingOrder.length);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    send(input.value);
    input.value = "";
    autosize();
    input.focus();
  });

  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit ? form.requestSubmit() : form.dispatchEvent(new Event("submit"));
    }
  });

  function autosize() {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight, 120) + "px";
  }
  input.addEventListener("input", autosize);

  Array.prototype.forEach.call(quickEl.querySelectorAll("[data-question]"), function (b) {
    b.addEventListener("click", function () { send(b.getAttribute("data-question")); });
  });

  if (handoffButton) {
    handoffButton.addEventListener("click", function () {
      if (socket && socket.readyState === WebSocket.OPEN && mode === "bot") {
        socket.send(JSON.stringify({ type: "handoff" }));
      }
    });
  }

  // static/leave_message.js sends through this page's socket: detail.sent says whether it went.
  document.addEventListener("chatbot:send", function (event) {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify(event.detail.payload));
    event.detail.sent = true;
  });

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible" && !socket && stopped && !refused) connect();
  });

  // ---------------------------------------------------------------- embedded (docs/widget.md)
  // To the embedding page, and to its origin only (never "*").
  function tell(message) {
    if (parentOrigin) window.parent.postMessage(message, parentOrigin);
  }

  // A message the user sees for the first time: for the widget's unread badge and on("message").
  // The text is what the page shows, masked by the server already.
  function announce(kind, text) {
    if (!text) return;
    var message = { type: "message", kind: kind, text: String(text) };
    if (doubt) doubt.push(message); else tell(message);
  }

  // What waited in doubt was news after all: a new conversation, not a replay.
  function settleDoubt() {
    var waiting = doubt || [];
    doubt = null;
    waiting.forEach(tell);
  }

  // Close 4004: the server refused the token. No reconnecting by ourselves: only identify() helps.
  function refuse() {
    refused = true;
    stopped = true;
    setStatus("refused", "身份验证未通过");
    input.disabled = true;
    sendButton.disabled = true;
  }

  // A new token from the host (sign-in, a refreshed token), or null (signed out): a new socket
  // carries it. Signed out, the customer's conversation leaves this screen and this tab.
  function identify(token) {
    if (token === identity) return;
    var signedOut = identity !== null && token === null;
    var refreshed = !refused && socket !== null && identity !== null && token !== null &&
      subjectOf(token) !== undefined && subjectOf(token) === subjectOf(identity);
    identity = token;
    // The same customer with a fresh token (the host renews it before it expires): the socket,
    // verified when it opened, goes on; the next one carries the new token.
    if (refreshed) return;
    refused = false;
    input.disabled = false;
    if (signedOut) {
      pending = {};
      pendingOrder = [];
      messagesEl.textContent = "";
      clearScreen();
      enterConversation(null);
      saveState();
    }
    var old = socket;
    socket = null;            // its close and any frame still on the way are no longer ours
    if (old) old.close(1000);
    connect();
  }

  // The state the widget kept for us (see saveState), checked like our own.
  function adopt(saved) {
    if (!saved || typeof saved !== "object") return;
    if (typeof saved.conversation !== "string" || !saved.conversation || saved.conversation.length > 128) return;
    if (typeof saved.lastSeq !== "number" || !(saved.lastSeq >= 0)) return;
    state.conversation = saved.conversation;
    announcedSeq = saved.lastSeq;
    quickEl.hidden = true;
  }

  // The customer a token names (its unverified "sub": only to tell a renewal from a new customer).
  function subjectOf(token) {
    try {
      var payload = token.split(".")[0].replace(/-/g, "+").replace(/_/g, "/");
      var sub = JSON.parse(atob(payload)).sub;
      return typeof sub === "string" ? sub : undefined;
    } catch (e) {
      return undefined;
    }
  }

  function tokenOf(value) {
    return typeof value === "string" && value.length > 0 && value.length <= 4096 ? value : null;
  }

  if (hadConversation) quickEl.hidden = true;
  if (parentOrigin) {
    var initialised = false;
    window.addEventListener("message", function (event) {
      if (event.source !== window.parent || event.origin !== parentOrigin) return;  // anyone else: ignored
      var data = event.data;
      if (!data || typeof data !== "object") return;
      if (data.type === "init" || data.type === "identify") {
        if (initialised) { identify(tokenOf(data.token)); return; }
        // The first socket waits for the widget's init: a token the host pushed before the
        // widget loaded is used at once, and no anonymous socket is opened first.
        initialised = true;
        identity = tokenOf(data.token);
        if (!ownStorage) adopt(data.state);
        connect();
      } else if (data.type === "open") {
        // The panel opened: back on line if the socket was let go (idle), and ready to type
        // (a phone keeps its keyboard closed until the user taps).
        if (initialised && !socket && stopped && !refused) connect();
        if (data.focus === true && window.matchMedia("(pointer: fine)").matches) input.focus();
      }
    });
    var close = function () { tell({ type: "close" }); };
    if (embedClose) embedClose.addEventListener("click", close);
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && !event.isComposing) close();
    });
    tell({ type: "ready" });
  } else {
    if (embedClose) embedClose.hidden = true;  // embed mode asked for, but not in a frame
    connect();
  }
})();
