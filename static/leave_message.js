// The chat page's 留言 form and 取消排队 button (docs/agents.md, "Business hours and messages").
// Loaded only where agents are configured. Talks to chat.js through document events:
// "chatbot:frame" and "chatbot:mode" in, "chatbot:send" out. No user text is inserted as HTML.
(function () {
  "use strict";

  var formEl = document.getElementById("leave-message-form");
  var contactEl = document.getElementById("leave-contact");
  var textEl = document.getElementById("leave-text");
  var hintEl = document.getElementById("leave-hint");
  var closeEl = document.getElementById("leave-close");
  var cancelEl = document.getElementById("cancel-handoff");
  var submitEl = formEl ? formEl.querySelector("button[type=submit]") : null;
  // Errors that answer the form (the server checks everything again).
  var FORM_ERRORS = ["empty_contact", "bad_contact", "empty_text", "too_long", "message_limit", "message_box_full", "message_unavailable"];
  var PHONE = /^\+?[0-9][0-9 ()-]{4,24}$/;
  var EMAIL = /^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$/;

  function send(payload) {
    var detail = { payload: payload, sent: false };
    document.dispatchEvent(new CustomEvent("chatbot:send", { detail: detail }));
    return detail.sent;
  }

  function hint(text) {
    if (!hintEl) return;
    hintEl.textContent = text;
    hintEl.hidden = !text;
  }

  function showForm(show) {
    if (!formEl) return;
    formEl.hidden = !show;
    if (submitEl) submitEl.disabled = false;
    hint("");
    if (show && contactEl) contactEl.focus();
  }

  document.addEventListener("chatbot:mode", function (event) {
    if (cancelEl) {
      cancelEl.hidden = event.detail.mode !== "queued";
      cancelEl.disabled = false;
    }
  });

  document.addEventListener("chatbot:frame", function (event) {
    var f = event.detail.frame;
    if (f.type === "system" && f.event === "handoff_closed" && event.detail.news) showForm(true);
    if (f.type === "system" && f.event === "message_left") {
      if (formEl && !formEl.hidden) formEl.reset();
      showForm(false);
    }
    if (f.type === "error" && formEl && !formEl.hidden && FORM_ERRORS.indexOf(f.code) >= 0) {
      hint(String(f.msg || ""));
      if (submitEl) submitEl.disabled = false;
    }
    if (f.type === "error" && cancelEl && (f.code === "not_queued" || f.code === "already_claimed")) cancelEl.disabled = false;
  });

  if (formEl) {
    formEl.addEventListener("submit", function (event) {
      event.preventDefault();
      var contact = contactEl.value.trim();
      var text = textEl.value.trim();
      if (!PHONE.test(contact) && !EMAIL.test(contact)) { hint("请填写正确的手机号码或电子邮箱。"); contactEl.focus(); return; }
      if (!text) { hint("请输入留言内容后再提交。"); textEl.focus(); return; }
      if (!send({ type: "leave_message", contact: contact, text: text })) { hint("连接已断开,请稍后再试。"); return; }
      hint("");
      if (submitEl) submitEl.disabled = true;  // until the server answers (message_left or an error)
    });
  }
  if (closeEl) closeEl.addEventListener("click", function () { showForm(false); });

  if (cancelEl) {
    cancelEl.addEventListener("click", function () {
      if (send({ type: "cancel_handoff" })) cancelEl.disabled = true;
    });
  }
})();
