"""Turn ranked matches into a Reply: the answer, or a fallback with suggestions below the threshold."""

from __future__ import annotations

import re

from ..base import Reply
from .cascade import Matcher, Ranking

FALLBACK_INTENT = "out_of_scope"
HANDOFF_INTENT = "human_agent"
MAX_SUGGESTIONS = 3
# Intents ranked per question: the suggestions plus room for the pleasantries skipped over.
RANK_LIMIT = MAX_SUGGESTIONS + 2
# Intents never offered as "did you mean" suggestions: they are not questions about cards.
_NOT_SUGGESTED = frozenset({"out_of_scope", "greeting", "thanks_goodbye", "human_agent"})
# Pleasantries around a question ("你好，我的卡丢了", "谢谢，那年费怎么免") are not what the customer
# wants answered: a card question matched at least this confidently wins over them.
_SOCIAL = frozenset({"greeting", "thanks_goodbye"})
SOCIAL_YIELD = 0.3
# ... unless the pleasantry explains the message far better ("有人在吗": greeting 0.89, a card
# question 0.30 on a shared character): then there is no question ("你好 余额": 0.86 and 0.73).
SOCIAL_MARGIN = 0.5

_LATIN = re.compile("[A-Za-z]")

FALLBACK_TEXT = "抱歉，我没有完全理解您的问题。"
FALLBACK_WITH_SUGGESTIONS = "您是想问以下问题吗？"
FALLBACK_HUMAN = "您可以换个说法再问一次，或回复“转人工”由人工客服为您服务（也可拨打银联客服 95516）。"
# Without agents (the default install) there is no 转人工 to offer: the hotline is the human channel.
FALLBACK_HOTLINE = "您可以换个说法再问一次，或拨打银联客服热线 95516 咨询人工客服。"
AFTER_SUGGESTIONS = "如果都不是，"


def shown_question(matcher: Matcher, intent: str, question: str) -> str:
    """The question a fallback offers for `intent`: the closest one, unless it is written partly in
    Latin letters (an example in the customers' English or pinyin is no question to offer on a
    Chinese page): then the intent's first question in characters only."""
    if not _LATIN.search(question):
        return question
    return next((q for q in matcher.entries[intent].questions if not _LATIN.search(q)), question)


def compose_reply(matcher: Matcher, text: str, *, agents: bool = False) -> Reply:
    """Answer `text`: the best entry when confident, else a fallback offering help
    (转人工 only when `agents`: human agents are configured)."""
    return reply_for(matcher, matcher.rank(text, limit=RANK_LIMIT), agents=agents)


def reply_for(matcher: Matcher, ranking: Ranking, *, agents: bool = False) -> Reply:
    """The reply to a ranking: its top entry if it clears the ranking's threshold, else the fallback."""
    matches, threshold = ranking.matches, ranking.threshold
    candidates = tuple((m.intent, round(m.confidence, 4)) for m in matches[:MAX_SUGGESTIONS])
    top = matches[0] if matches else None
    if top is not None and top.intent in _SOCIAL:
        floor = max(threshold, SOCIAL_YIELD, top.confidence - SOCIAL_MARGIN)
        question = next((m for m in matches[1:] if m.intent not in _NOT_SUGGESTED and m.confidence >= floor), None)
        top = question or top
    if top is not None and top.confidence >= threshold:
        entry = matcher.entries[top.intent]
        follow_ups = tuple(matcher.entries[s].questions[0] for s in entry.suggestions[:MAX_SUGGESTIONS])
        return Reply(
            text=entry.answer.strip(),
            intent=entry.id,
            confidence=round(top.confidence, 4),
            suggestions=follow_ups,
            handoff=entry.id == HANDOFF_INTENT,
            candidates=candidates,
        )
    suggestions = tuple(
        shown_question(matcher, m.intent, m.question) for m in ranking.offered if m.intent not in _NOT_SUGGESTED
    )[:MAX_SUGGESTIONS]
    lines = [FALLBACK_TEXT]
    if suggestions:
        lines.append(FALLBACK_WITH_SUGGESTIONS)
        lines.extend(f"{n}. {question}" for n, question in enumerate(suggestions, 1))
    offer = FALLBACK_HUMAN if agents else FALLBACK_HOTLINE
    lines.append(AFTER_SUGGESTIONS + offer if suggestions else offer)
    return Reply(
        text="\n".join(lines),
        intent=FALLBACK_INTENT,
        confidence=round(top.confidence, 4) if top is not None else 0.0,
        suggestions=suggestions,
        fallback=True,
        candidates=candidates,
    )
