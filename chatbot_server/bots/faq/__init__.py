"""The Chinese FAQ bot for UnionPay bank-card customer service (`bot.name: faq`)."""

from __future__ import annotations

from .bot import FaqBot
from .options import FaqOptions

__all__ = ["FaqBot", "FaqOptions"]
