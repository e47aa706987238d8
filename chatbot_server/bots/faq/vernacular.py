"""Customers' spellings of the domain words: toneless pinyin fragments and dialect words.

Customers type pinyin when the input method is off or the word will not come ("卡丢了guashi",
"yue chaxun"), and Cantonese or south-western words ("點樣掛失", "冇用過", "咋个查"). Neither
stage can match them as they are: the lexical index has no such words and the sentence
encoder reads pinyin as noise. Rewriting them to the Mandarin words lets both stages see them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pinyin import SentenceReader

# Toneless pinyin of the domain's words -> the words. Two syllables at least, and nothing that
# is also an English word ("tie" is 提额 only as "ti'e"), so English text passes untouched.
PINYIN = {
    "guashi": "挂失",
    "jihuo": "激活",
    "kaika": "开卡",
    "jiesuo": "解锁",
    "suoka": "锁卡",
    "mima": "密码",
    "wangji": "忘记",
    "xiugai": "修改",
    "chongshe": "重设",
    "huanka": "换卡",
    "buka": "补卡",
    "buban": "补办",
    "yue": "余额",
    "yu'e": "余额",
    "chaxun": "查询",
    "zhuanzhang": "转账",
    "huikuan": "汇款",
    "daozhang": "到账",
    "tuikuan": "退款",
    "tuihuo": "退货",
    "daoshua": "盗刷",
    "xiaofei": "消费",
    "koukuan": "扣款",
    "shuaka": "刷卡",
    "quxian": "取现",
    "qukuan": "取款",
    "quqian": "取钱",
    "tixian": "提现",
    "xiane": "限额",
    "xian'e": "限额",
    "edu": "额度",
    "ti'e": "提额",
    "tigao": "提高",
    "fenqi": "分期",
    "nianfei": "年费",
    "jifen": "积分",
    "guanlifei": "管理费",
    "shouxufei": "手续费",
    "xiaoe": "小额",
    "xiao'e": "小额",
    "mianmi": "免密",
    "shanfu": "闪付",
    "yunshanfu": "云闪付",
    "saoma": "扫码",
    "erweima": "二维码",
    "fukuanma": "付款码",
    "zhifu": "支付",
    "fukuan": "付款",
    "shibai": "失败",
    "wangshang": "网上",
    "wanggou": "网购",
    "yanzhengma": "验证码",
    "duanxin": "短信",
    "xinyongka": "信用卡",
    "yinhangka": "银行卡",
    "jiejika": "借记卡",
    "chuxuka": "储蓄卡",
    "huankuan": "还款",
    "zhangdan": "账单",
    "dongjie": "冻结",
    "jiedong": "解冻",
    "xiaohu": "销户",
    "zhuxiao": "注销",
    "xiaoka": "销卡",
    "tunka": "吞卡",
    "beitun": "被吞",
    "tunle": "吞了",
    "kadiule": "卡丢了",
    "diule": "丢了",
    "bujianle": "不见了",
    "beisuo": "被锁",
    "suole": "锁了",
    "beidong": "被冻",
    "beitou": "被偷",
    "shensu": "申诉",
    "butuikuan": "不退款",
    "shangjia": "商家",
    "zhengyi": "争议",
    "nihao": "你好",
    "ninhao": "您好",
    "zaima": "在吗",
    "xiexie": "谢谢",
    "duoxie": "多谢",
    "zaijian": "再见",
    "baibai": "拜拜",
    "rengong": "人工",
    "kefu": "客服",
    "tousu": "投诉",
    "shouji": "手机",
    "shoujihao": "手机号",
    "haoma": "号码",
    "biangeng": "变更",
    "dizhi": "地址",
    "shanghu": "商户",
    "yinlian": "银联",
    "yinlianka": "银联卡",
    "bangka": "绑卡",
    "bangding": "绑定",
    "zhuce": "注册",
    "huilv": "汇率",
    "jingwai": "境外",
    "guowai": "国外",
    "haiwai": "海外",
    "shenqing": "申请",
    "jiaoyi": "交易",
    "zhanghu": "账户",
    # Question words around them, so the question reads as one ("zenme guashi").
    "zenme": "怎么",
    "zenmeban": "怎么办",
    "shenme": "什么",
    "weishenme": "为什么",
    "meiyou": "没有",
    "keyi": "可以",
    "xuyao": "需要",
    "duoshao": "多少",
    "duojiu": "多久",
}
# Cantonese and south-western words (after traditional -> simplified), longest first.
DIALECT = {
    "唔该": "谢谢",
    "唔见": "不见",
    "点样": "怎么",
    "点解": "为什么",
    "点算": "怎么办",
    "边度": "哪里",
    "几多": "多少",
    "乜嘢": "什么",
    "碌卡": "刷卡",
    "啱啱": "刚刚",
    "咋个": "怎么",
    "啥子": "什么",
    "莫得": "没有",
    "冇": "没",
    "咗": "了",
    "唔": "不",
    "嘅": "的",
    "喺": "在",
    "啲": "些",
    "嚟": "来",
    "睇": "看",
    "俾": "给",
    "畀": "给",
    "咩": "什么",
    "揾": "找",
    "搵": "找",
    "攞": "拿",
    "嗰": "那",
    "佢": "他",
}
_DIALECT_PATTERN = re.compile("|".join(sorted(map(re.escape, DIALECT), key=len, reverse=True)))
# A run of pinyin-like words: letters (and syllable-separating apostrophes) separated by spaces.
_LATIN_RUN = re.compile(r"[a-z][a-z']*(?: +[a-z][a-z']*)*")
_LONGEST = max(len(key.replace("'", "")) for key in PINYIN)


def rewrite(text: str, reader: SentenceReader | None = None) -> str:
    """Rewrite pinyin fragments and dialect words of a normalised (lower-case, simplified) text.

    With a knowledge base's `reader`, whole pinyin sentences are read with its words and
    sound-alike slips of its domain words corrected; without, the fixed table reads fragments.
    """
    text = _DIALECT_PATTERN.sub(lambda m: DIALECT[m.group()], text)
    if reader is None:
        return _LATIN_RUN.sub(lambda m: _pinyin_run(m.group()), text)
    text = _LATIN_RUN.sub(lambda m: reader.read(m.group()) or _pinyin_run(m.group()), text)
    return reader.correct(text)


def _pinyin_run(run: str) -> str:
    """Replace the longest known spans of consecutive words ("yue chaxun" -> 余额查询)."""
    words = run.split(" ")
    out: list[str] = []
    i = 0
    while i < len(words):
        for j in range(len(words), i, -1):
            joined = "".join(words[i:j])
            if len(joined) > _LONGEST + 2:
                continue
            hanzi = PINYIN.get(joined) or PINYIN.get(joined.replace("'", ""))
            if hanzi is not None:
                out.append(hanzi)
                i = j
                break
        else:
            out.append(words[i])
            i += 1
    # Hanzi from neighbouring words join up, as typed in characters; other words keep their spaces.
    text = ""
    for word in out:
        if text and not (_is_hanzi(text[-1]) and _is_hanzi(word[0])):
            text += " "
        text += word
    return text


def _is_hanzi(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff"
