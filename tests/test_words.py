from longform.words import (
    count_words, count_words_lbw, detect_language, guess_script, label_contradiction, normalize_language_label,
)


def test_english_counts_whitespace_words_in_self_lengthen_rule():
    assert count_words("The quick brown fox.") == 4
    assert count_words("state-of-the-art models, version 3.5!") == 4


def test_longbench_rule_counts_letter_runs_only():
    assert count_words_lbw("state-of-the-art models, version 3.5!") == 6
    assert count_words_lbw("3.5 2048") == 0


def test_chinese_characters_count_one_each():
    assert count_words("蜜蜂会跳舞") == 5
    assert count_words_lbw("蜜蜂会跳舞") == 5


def test_rules_differ_on_chinese_punctuation_and_full_width_forms():
    text = "你好，世界！"  # 4 ideographs + 2 full-width/CJK punctuation marks
    assert count_words(text) == 6
    assert count_words_lbw(text) == 4


def test_mixed_text():
    text = "我用 GPU 训练 model，效果很好。"
    # Self-Lengthen: 我用训练效果很好 (8) + ，。 (2) + GPU, model (2)
    assert count_words(text) == 12
    # LongBench-Write: 8 ideographs + GPU, model
    assert count_words_lbw(text) == 10


def test_empty_text():
    assert count_words("") == 0
    assert count_words_lbw("   \n") == 0


def test_detect_language():
    assert detect_language("Bees make honey.") == "en"
    assert detect_language("蜜蜂酿蜜。") == "zh"
    assert detect_language("请用 Python 写一个程序") == "zh"
    assert detect_language("1234 !!") is None
    assert detect_language("") is None


def test_detect_language_by_script_share():
    # an English request about a Chinese topic is English; a Chinese one naming an English term is Chinese
    assert detect_language("Write an essay on 北京烤鸭的历史") == "en"
    assert detect_language("请用 Python 写一个程序") == "zh"
    # Japanese (kanji with kana) is not Chinese; Russian with one English word is not English
    assert guess_script("東京の歴史について長いエッセイを書いてください。") == "ja"
    assert detect_language("東京の歴史について長いエッセイを書いてください。") is None
    assert guess_script("Пожалуйста, напишите эссе об истории Москвы, please") == "ru"
    assert detect_language("Пожалуйста, напишите эссе об истории Москвы, please") is None
    assert detect_language("Ελληνικό κείμενο για τις μέλισσες") is None
    assert detect_language("請寫一篇關於北京的文章") == "zh"  # traditional characters are Chinese too


def test_language_labels_normalise_and_contradictions_are_named():
    assert [normalize_language_label(x) for x in ("ZH", "zh-CN", "zh_Hans", "en-US", " en ", "fr", "ja-JP")] == \
        ["zh", "zh", "zh", "en", "en", None, None]
    assert label_contradiction("蜜蜂酿蜜。", "en") is not None
    assert label_contradiction("Bees make honey.", "zh") is not None
    assert label_contradiction("Write about 北京烤鸭的历史与文化", "en") is None  # mixed: the label decides
    assert label_contradiction("Write about 北京烤鸭的历史与文化", "zh") is None


def test_counts_scan_only_the_scripts_present_and_agree_with_scanning_all_of_them():
    """`script_words` looks for a script only if one of its letters is in the text, and
    `count_words` splits a text with no counted character on whitespace: the same counts as
    every pattern over the whole text, on random mixes of scripts, digits, spaces and symbols."""
    import random

    from longform.words import OTHER, count_words, recogniser, script_words

    r = recogniser()

    def every_pattern(text):
        words = {s.code: len(p.findall(text)) / (s.chars_per_word or 1) for s, p in zip(r.scripts, r.patterns)}
        return {**words, OTHER: float(len(r.other_word.findall(text)))}

    alphabet = ([chr(c) for c in range(0x20, 0x600)] + [chr(c) for c in range(0x3000, 0x3100)]
                + [chr(c) for c in range(0x4E00, 0x4E30)] + [chr(c) for c in range(0xAC00, 0xAC10)]
                + [chr(c) for c in range(0xFF00, 0xFF70)] + list("\n\t\u3000\xa0\u2003_½²٣Ⅻ"))
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert script_words(text) == every_pattern(text), repr(text)
        assert count_words(text) == len(r.self_lengthen_word.findall(text)), repr(text)
