from longform.words import count_words, count_words_lbw, detect_language


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
