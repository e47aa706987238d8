"""Regenerate `data/pinyin.txt` from pypinyin: python -m chatbot_server.bots.faq.pinyin_table.

Only this needs pypinyin installed (the test extra has it); the bot reads the table it writes.
"""

from __future__ import annotations

from pathlib import Path

from .pinyin import TABLE


def table_from_pypinyin() -> str:
    """The text of `data/pinyin.txt`, made with pypinyin (only this needs it installed)."""
    from importlib.metadata import version

    from pypinyin import Style, pinyin

    lines = [
        f"# Toneless readings of the GB2312 characters, most common first, from pypinyin {version('pypinyin')}",
        "# (MIT licence, Copyright (c) 2016 mozillazg, 闲耘 <hotoo.cn@gmail.com>),",
        "# made by: python -m chatbot_server.bots.faq.pinyin_table",
    ]
    for code in range(0x4E00, 0xA000):
        char = chr(code)
        try:
            char.encode("gb2312")
        except UnicodeEncodeError:
            continue
        found = [s for s in pinyin(char, style=Style.NORMAL, heteronym=True)[0] if s.isascii() and s.isalpha()]
        if found:
            # Customers type ü as v or u (lv, lu): keep both.
            spelled = dict.fromkeys(s for reading in found for s in (reading, reading.replace("v", "u")))
            lines.append(" ".join([char, *spelled]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    target = Path(__file__).with_name("data") / TABLE
    target.write_text(table_from_pypinyin(), encoding="utf-8")
    print(f"wrote {target}")
