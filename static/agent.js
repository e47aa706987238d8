// Agent console: the live queue, the agent's conversations, transcripts and replies.
// All user text is rendered with textContent, never as HTML.
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("agent-config").textContent);
  var statusEl = document.getElementById("status");
  var queueEl = document.getElementById("queue");
  var queueCount = document.getElementById("queue-count");
  var convsEl = document.getElementById("conversations");
  var transcriptEl = document.getElementById("transcript");
  var customerEl = document.getElementById("customer");
  var emptyEl = document.getElementById("empty");
  var actionsEl = document.getElementById("actions");
  var form = document.getElementById("reply-form");
  var input = document.getElementById("reply-input");
  var agentStatus = document.getElementById("agent-status");
  var transferTo = document.getElementById("transfer-to");
  var transferBtn = document.getElementById("transfer");
  var noticeEl = document.getElementById("notice");
  var ROLE = { user: "用户", reply: "智能客服", greeting: "智能客服", agent: "客服", system: "系统" };

  var socket = null;
  var retry = 0;
  var conversations = {};   // id -> {frames: {seq: frame}, preview}
  var waiting = {};         // the queue: id -> {conversation, since, preview}
  var left = {};            // open left messages (留言): id -> {id, ts, contact, text, conversation}
  var leftEl = document.getElementById("left-messages");
  var leftCount = document.getElementById("left-count");
  var selected = null;
  var roster = [];          // present agents: {username, name, status, load, capacity}
  var CLOSED = {
    reassigned: "您未在规定时间内回复,该会话已转给其他客服;您的状态已设为暂离。",
    transferred: "会话已转接给同事。"
  };

  function notice(text) {
    noticeEl.textContent = text;
    noticeEl.hidden = !text;
  }

  function showStatus(status) {
    agentStatus.value = status;
    agentStatus.setAttribute("data-status", status);
  }

  // Who is online: my status, and the colleagues a conversation can be transferred to.
  function setRoster(agents) {
    roster = agents || [];
    var keep = transferTo.value;
    while (transferTo.options.length > 1) transferTo.remove(1);
    roster.forEach(function (a) {
      if (a.username === config.agent.username) { showStatus(a.status); return; }
      if (a.status !== "online") return;
      var option = document.createElement("option");
      option.value = a.username;
      option.textContent = a.name + "(" + a.load + "/" + a.capacity + ")";
      option.disabled = a.load >= a.capacity;
      transferTo.appendChild(option);
    });
    transferTo.value = keep;
    if (transferTo.value !== keep) transferTo.value = "";
    transferBtn.disabled = !transferTo.value;
  }

  function setStatus(kind, text) {
    statusEl.className = "status status-" + kind;
    statusEl.textContent = text;
    document.body.setAttribute("data-connection", kind);
  }

  function send(data) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(data));
  }

  function short(id) { return id.slice(0, 6); }

  // The server sends the whole queue once (on connect), then only its changes.
  function setQueue(items) {
    waiting = {};
    items.forEach(function (item) { waiting[item.conversation] = item; });
    renderQueue();
  }

  function renderQueue() {
    // First come first: the order the server keeps (enqueue time, then id).
    var items = Object.keys(waiting).map(function (id) { return waiting[id]; }).sort(function (a, b) {
      return a.since - b.since || (a.conversation < b.conversation ? -1 : a.conversation > b.conversation ? 1 : 0);
    });
    queueEl.textContent = "";
    queueCount.textContent = String(items.length);
    items.forEach(function (item, n) {
      item.position = n + 1;
      var li = document.createElement("li");
      li.setAttribute("data-conversation", item.conversation);
      var text = document.createElement("span");
      text.className = "preview";
      text.textContent = "#" + item.position + " " + (item.preview || "(用户 " + short(item.conversation) + ")");
      var claim = document.createElement("button");
      claim.type = "button";
      claim.className = "claim";
      claim.textContent = "接入";
      claim.addEventListener("click", function () { send({ type: "claim", conversation: item.conversation }); });
      li.appendChild(text);
      li.appendChild(claim);
      queueEl.appendChild(li);
    });
  }

  // Messages left outside business hours, oldest first; 处理完成 closes one for every console.
  function renderLeft() {
    var items = Object.keys(left).map(function (id) { return left[id]; }).sort(function (a, b) { return a.ts - b.ts; });
    leftEl.textContent = "";
    leftCount.textContent = String(items.length);
    items.forEach(function (item) {
      var li = document.createElement("li");
      li.setAttribute("data-message", item.id);
      var meta = document.createElement("span");
      meta.className = "left-meta";
      meta.textContent = new Date(item.ts).toLocaleString("zh-CN") + " · " + item.contact + " · 会话 " + short(item.conversation);
      var text = document.createElement("span");
      text.className = "preview";
      text.textContent = item.text;
      var close = document.createElement("button");
      close.type = "button";
      close.className = "close-message";
      close.textContent = "处理完成";
      close.addEventListener("click", function () { send({ type: "close_message", id: item.id }); });
      li.appendChild(meta);
      li.appendChild(text);
      li.appendChild(close);
      leftEl.appendChild(li);
    });
  }

  function renderConversations() {
    convsEl.textContent = "";
    Object.keys(conversations).forEach(function (id) {
      var li = document.createElement("li");
      li.setAttribute("data-conversation", id);
      if (id === selected) li.className = "selected";
      var text = document.createElement("span");
      text.className = "preview";
      text.textContent = conversations[id].preview || "用户 " + short(id);
      var open = document.createElement("button");
      open.type = "button";
      open.textContent = "查看";
      open.addEventListener("click", function () { select(id); });
      li.appendChild(text);
      li.appendChild(open);
      convsEl.appendChild(li);
    });
  }

  function ensure(id) {
    if (!conversations[id]) conversations[id] = { frames: {}, preview: "" };
    return conversations[id];
  }

  function merge(id, frames) {
    var conv = ensure(id);
    frames.forEach(function (f) {
      if (typeof f.seq === "number") conv.frames[f.seq] = f;
      if (f.type === "user") conv.preview = f.msg;
    });
    renderConversations();
    if (id === selected) renderTranscript();
  }

  function renderTranscript() {
    var conv = conversations[selected];
    transcriptEl.textContent = "";
    // A customer the host site signed in (identity tokens): who they are, as the site named them.
    customerEl.hidden = !(conv && conv.customer);
    if (conv && conv.customer) {
      customerEl.textContent = "已验证客户:" + (conv.customer.name || "未提供姓名") + "(客户号 " + conv.customer.id + ")";
    }
    if (!conv) return;
    Object.keys(conv.frames).map(Number).sort(function (a, b) { return a - b; }).forEach(function (seq) {
      var f = conv.frames[seq];
      if (!ROLE[f.type]) return;
      var li = document.createElement("li");
      li.className = "agent-msg role-" + (f.type === "greeting" ? "reply" : f.type);
      li.setAttribute("data-seq", String(seq));
      var who = document.createElement("span");
      who.className = "who";
      who.textContent = f.type === "agent" && f.agent ? f.agent : ROLE[f.type];
      var text = document.createElement("span");
      text.className = "text";
      text.textContent = f.msg;
      li.appendChild(who);
      li.appendChild(text);
      transcriptEl.appendChild(li);
    });
    transcriptEl.scrollTop = transcriptEl.scrollHeight;
  }

  function select(id) {
    selected = id;
    var open = !!conversations[id];
    transcriptEl.hidden = !open;
    actionsEl.hidden = !open;
    form.hidden = !open;
    emptyEl.hidden = open;
    renderConversations();
    renderTranscript();
    if (open) input.focus();
    document.dispatchEvent(new CustomEvent("agent:select", { detail: open ? id : null }));  // agent_tools.js
  }

  function drop(id) {
    delete conversations[id];
    if (selected === id) select(null);
    else renderConversations();
  }

  function handle(m) {
    switch (m.type) {
      case "hello":
        setStatus("connected", config.agent.name + " 在线");  // after a "queue_unavailable" error
        m.active.forEach(function (id) { ensure(id); });
        renderConversations();
        if (!selected && m.active.length) select(m.active[0]);
        agentStatus.disabled = false;
        setRoster(m.agents);
        break;
      case "agents": setRoster(m.agents); break;
      case "status":
        showStatus(m.status);
        if (m.status === "away" && !noticeEl.textContent) notice("您已设为暂离,不会再为您分配新会话。");
        if (m.status === "online") notice("");
        break;
      case "assigned":
        ensure(m.conversation);
        notice("已为您分配新会话(用户 " + short(m.conversation) + "),请尽快回复。");
        if (!selected) select(m.conversation);
        else renderConversations();
        break;
      case "queue": setQueue(m.items); break;
      case "queue_added":
      case "queue_changed": waiting[m.item.conversation] = m.item; renderQueue(); break;
      case "queue_removed":
        m.conversations.forEach(function (id) { delete waiting[id]; });
        renderQueue();
        break;
      case "left_messages":
        left = {};
        m.items.forEach(function (item) { left[item.id] = item; });
        renderLeft();
        break;
      case "left_message_added": left[m.item.id] = m.item; renderLeft(); break;
      case "left_message_closed": delete left[m.id]; renderLeft(); break;
      case "claimed": ensure(m.conversation); select(m.conversation); break;
      case "claim_failed": setStatus("connected", "该用户已被其他客服接入"); break;
      case "transcript":
        if (m.customer) ensure(m.conversation).customer = m.customer;
        merge(m.conversation, m.frames);
        break;
      case "frame": merge(m.conversation, [m.frame]); break;
      case "closed":
        if (CLOSED[m.reason]) notice(CLOSED[m.reason]);
        drop(m.conversation);
        break;
      case "error": setStatus("connected", m.msg); break;
    }
    document.dispatchEvent(new CustomEvent("agent:frame", { detail: m }));  // agent_tools.js
  }

  function connect() {
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + config.wsPath;
    setStatus("connecting", "正在连接…");
    var opened = false;
    socket = new WebSocket(url);
    socket.onopen = function () { opened = true; retry = 0; setStatus("connected", config.agent.name + " 在线"); };
    socket.onmessage = function (event) { handle(JSON.parse(event.data)); };
    socket.onclose = function (event) {
      // 4003: the session was signed out (perhaps in another tab or process) or expired. Reloading
      // the console redirects to the sign-in page; reconnecting would only be refused.
      if (event.code === 4003) { setStatus("disconnected", "登录已失效,请重新登录。"); location.reload(); return; }
      setStatus("disconnected", "连接已断开,正在重连…");
      retry = Math.min(retry + 1, 6);
      if (!opened) {
        // Refused before opening: if the session has expired, the console page now redirects.
        fetch(location.href, { redirect: "manual", credentials: "same-origin" }).then(function (r) {
          if (r.type === "opaqueredirect") location.reload();
        }, function () { /* offline: keep retrying */ });
      }
      setTimeout(connect, 250 * Math.pow(2, retry));
    };
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text || !selected) return;
    send({ type: "reply", conversation: selected, text: text });
    input.value = "";
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  agentStatus.addEventListener("change", function () {
    notice("");
    send({ type: "status", status: agentStatus.value });
  });
  transferTo.addEventListener("change", function () { transferBtn.disabled = !transferTo.value; });
  transferBtn.addEventListener("click", function () {
    if (selected && transferTo.value) send({ type: "transfer", conversation: selected, to: transferTo.value });
  });
  document.getElementById("end").addEventListener("click", function () {
    if (selected) send({ type: "end", conversation: selected });
  });
  document.getElementById("handback").addEventListener("click", function () {
    if (selected) send({ type: "handback", conversation: selected });
  });
  // What agent_tools.js (canned replies, typing, notifications, export, suggestions) may use.
  window.agentConsole = {
    config: config,
    send: send,
    selected: function () { return selected; },
    conversation: function (id) { return conversations[id]; }
  };
  connect();
}());
