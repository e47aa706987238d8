// The rating card after an agent ends a chat (docs/agents.md "Ratings"). chat.js calls
// chatbotRating.show(agentName, sendFrame) on a "rating_request" frame (also when replayed after a
// reload) and chatbotRating.hide() on "rating_done". Text is only ever inserted as text.
(function () {
  "use strict";

  var MAX_COMMENT = 200;  // agents.rating_comment_length's default; the server checks its own
  var card = null;
  var score = 0;

  function button(text, id, cls) {
    var b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    if (id) b.id = id;
    if (cls) b.className = cls;
    return b;
  }

  function hide() {
    if (card && card.parentNode) card.parentNode.removeChild(card);
    card = null;
    score = 0;
  }

  function show(agentName, sendFrame) {
    if (card) return;  // once
    var list = document.getElementById("messages");
    if (!list) return;
    card = document.createElement("li");
    card.id = "rating-card";
    card.className = "rating-card";
    var title = document.createElement("p");
    title.className = "rating-title";
    title.textContent = "请为" + (agentName ? agentName + "的" : "本次") + "服务评分";
    var stars = document.createElement("div");
    stars.id = "rating-stars";
    stars.className = "rating-stars";
    stars.setAttribute("role", "group");
    stars.setAttribute("aria-label", "评分,1 到 5 星");
    var comment = document.createElement("textarea");
    comment.id = "rating-comment";
    comment.className = "rating-comment";
    comment.rows = 2;
    comment.maxLength = MAX_COMMENT;
    comment.placeholder = "您的意见(选填)";
    var submit = button("提交", "rating-submit", "send");
    var skip = button("跳过", "rating-skip", "chip");
    submit.disabled = true;
    for (var n = 1; n <= 5; n += 1) {
      var star = button("★", null, "rating-star");
      star.setAttribute("data-score", String(n));
      star.setAttribute("aria-label", n + " 星");
      star.setAttribute("aria-pressed", "false");
      stars.appendChild(star);
    }
    stars.addEventListener("click", function (event) {
      var target = event.target;
      if (!target || !target.getAttribute || !target.getAttribute("data-score")) return;
      score = Number(target.getAttribute("data-score"));
      Array.prototype.forEach.call(stars.children, function (s) {
        var on = Number(s.getAttribute("data-score")) <= score;
        s.classList.toggle("on", on);
        s.setAttribute("aria-pressed", String(Number(s.getAttribute("data-score")) === score));
      });
      submit.disabled = false;
    });
    submit.addEventListener("click", function () {
      if (score >= 1 && sendFrame({ type: "rating", score: score, comment: comment.value.trim() })) submit.disabled = true;
    });
    skip.addEventListener("click", function () { sendFrame({ type: "rating", skip: true }); });
    var actions = document.createElement("div");
    actions.className = "rating-actions";
    actions.appendChild(skip);
    actions.appendChild(submit);
    card.appendChild(title);
    card.appendChild(stars);
    card.appendChild(comment);
    card.appendChild(actions);
    list.appendChild(card);
  }

  window.chatbotRating = { show: show, hide: hide };
})();
