"""The toy world the tiny model learns: topics, sentence templates with random slot fillers, and
instruction phrasings, in English and Chinese.

Each template is one ASPECT of a topic, and the templates' list order is the aspects' canonical
order. Every text of the world (a short answer, an extended text) visits distinct aspects in
that order, with the topic and 2-4 random fillers in each sentence. So:
  * a text never repeats a sentence, and the quality rule on repeated 10-word (en) / 13-token
    (zh) n-grams cannot fire, since no template appears twice;
  * what comes next depends on the previous sentence alone ("a later aspect"), which even a tiny
    model learns, so greedy decoding walks forward instead of looping on its likeliest sentence;
  * every text spans the whole range of aspects, so a longer text is a denser walk (smaller
    steps), up to one sentence per aspect; extending a text halves its step.
Fillers are drawn independently, so each topic has hundreds of thousands of distinct sentences.
"""

from __future__ import annotations

import random
import re

# (English name, Chinese name). English names are plural or mass nouns and the templates avoid
# present-tense agreement, so every template reads well with every topic.
TOPICS: list[tuple[str, str]] = [
    ("tea", "茶"), ("rivers", "河流"), ("bicycles", "自行车"), ("bread", "面包"),
    ("bees", "蜜蜂"), ("mountains", "高山"), ("lighthouses", "灯塔"), ("kites", "风筝"),
    ("libraries", "图书馆"), ("gardens", "花园"), ("trains", "火车"), ("the moon", "月亮"),
    ("rain", "雨水"), ("coffee", "咖啡"), ("silk", "丝绸"), ("pottery", "陶器"),
    ("chess", "象棋"), ("clocks", "钟表"), ("bridges", "桥梁"), ("maps", "地图"),
    ("lanterns", "灯笼"), ("forests", "森林"), ("honey", "蜂蜜"), ("rice", "稻米"),
    ("boats", "小船"), ("music", "音乐"), ("paper", "纸张"), ("salt", "盐"),
    ("stars", "星星"), ("deserts", "沙漠"), ("islands", "岛屿"), ("snow", "雪"),
    ("owls", "猫头鹰"), ("horses", "马"), ("wool", "羊毛"), ("glass", "玻璃"),
    ("candles", "蜡烛"), ("violins", "小提琴"), ("apples", "苹果"), ("wind", "风"),
    ("letters", "书信"), ("castles", "城堡"), ("windmills", "风车"), ("dolphins", "海豚"),
    ("whales", "鲸鱼"), ("volcanoes", "火山"), ("cherry blossoms", "樱花"), ("dumplings", "饺子"),
    ("calligraphy", "书法"), ("tigers", "老虎"), ("pandas", "熊猫"), ("bamboo", "竹子"),
    ("fireworks", "烟花"), ("porcelain", "瓷器"), ("umbrellas", "雨伞"), ("wells", "水井"),
    ("caves", "山洞"), ("waterfalls", "瀑布"), ("cats", "猫"), ("dogs", "狗"),
]

# Counts written in digits as well as in words, in both languages: a world without a digit leaves
# the digit tokens untrained, and a query that states a number (a length constraint) then reads
# as noise to the model (at random init, one digit sent most replies straight to their end).
# They count generations, pictures, years: nothing here ties a number to a text's length.
DIGITS = ["12", "24", "30", "45", "60", "75", "100", "120", "150", "200", "250", "300", "400", "500",
          "600", "800", "900"]

SLOTS: dict[str, dict[str, list[str]]] = {
    "en": {
        "place": ["Kyoto", "Lisbon", "Nairobi", "Oslo", "Lima", "Hanoi", "Cairo", "Quebec",
                  "Dublin", "Seoul", "Vienna", "Athens", "Bergen", "Porto", "Tbilisi", "Mumbai",
                  "Havana", "Tunis", "Krakow", "Perth", "Utrecht", "Valencia", "Bologna",
                  "Odessa", "Manila", "Santiago", "Glasgow", "Zurich", "Marseille", "Sapporo"],
        "person": ["my grandmother", "a young teacher", "an old sailor", "a local baker",
                   "a retired doctor", "a village elder", "a curious student", "a travelling poet",
                   "a quiet librarian", "a busy nurse", "a street musician", "a patient farmer",
                   "a famous chef", "a careful engineer", "a young painter", "an old fisherman",
                   "a shy shopkeeper", "a bright pupil", "a kind neighbour", "a local historian",
                   "a mountain guide", "a night watchman", "a village potter", "a market trader",
                   "a young mother", "a school porter", "an old soldier", "a gifted singer",
                   "a humble monk", "a city clerk"],
        "time": ["every spring", "in early autumn", "on cold mornings", "after the harvest",
                 "during the long winter", "at dusk", "before dawn", "on market days",
                 "in the rainy season", "at midsummer", "on holidays", "late at night",
                 "in the dry months", "after school", "on weekends", "at the new year",
                 "in the first snow", "during festivals", "on foggy days", "at noon"],
        "adj": ["quiet", "bright", "gentle", "humble", "lively", "patient", "simple", "sturdy",
                "graceful", "curious", "modest", "steady", "vivid", "warm", "careful", "fragile",
                "ancient", "clever", "honest", "playful"],
        "thing": ["daily life", "family meals", "the local economy", "old customs",
                  "children's games", "village songs", "the school day", "town markets",
                  "winter evenings", "long journeys", "the harvest", "small shops",
                  "public squares", "folk tales", "weekly routines", "quiet afternoons",
                  "seaside towns", "mountain paths", "city streets", "holiday traditions"],
        "num": ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "twelve", "fifteen", "twenty", *DIGITS],
        "verb": ["shaped", "changed", "inspired", "improved", "brightened", "softened",
                 "enriched", "connected", "comforted", "surprised"],
        "feel": ["joy", "calm", "pride", "hope", "wonder", "comfort", "nostalgia", "courage",
                 "patience", "curiosity"],
    },
    "zh": {
        "place": ["杭州", "成都", "西安", "昆明", "大理", "苏州", "青岛", "桂林", "洛阳", "厦门",
                  "拉萨", "丽江", "扬州", "泉州", "开封", "敦煌", "黄山", "长沙", "南京", "重庆",
                  "哈尔滨", "福州", "绍兴", "景德镇", "贵阳", "兰州", "喀什", "宁波", "徽州", "潮州"],
        "person": ["老奶奶", "年轻教师", "老渔夫", "面包师", "退休医生", "村里的长者", "好奇的学生",
                   "游吟诗人", "图书管理员", "护士", "街头乐手", "老农", "名厨", "工程师",
                   "青年画家", "船夫", "店主", "小学生", "邻居", "地方史学者", "向导", "守夜人",
                   "陶艺匠", "商贩", "年轻母亲", "老门卫", "老兵", "歌手", "僧人", "职员"],
        "time": ["每年春天", "初秋时节", "寒冷的清晨", "秋收之后", "漫长的冬天", "黄昏时分",
                 "天亮之前", "赶集的日子", "雨季", "盛夏", "节假日", "深夜", "旱季", "放学以后",
                 "周末", "新年前后", "初雪时", "节庆期间", "雾天", "正午"],
        "adj": ["安静", "明亮", "温和", "朴素", "热闹", "耐心", "简单", "结实", "优雅", "新奇",
                "谦和", "稳定", "生动", "温暖", "细致", "脆弱", "古老", "巧妙", "真诚", "有趣"],
        "thing": ["日常生活", "家常饭菜", "当地经济", "古老习俗", "儿童游戏", "乡村歌谣",
                  "校园生活", "城镇集市", "冬日夜晚", "远途旅行", "丰收季节", "街边小店",
                  "公共广场", "民间故事", "每周安排", "午后时光", "海边小镇", "山间小路",
                  "城市街道", "节日传统"],
        "num": ["两", "三", "四", "五", "六", "七", "八", "九", "十", "十二", "十五", "二十", *DIGITS],
        "verb": ["改变了", "影响了", "点亮了", "丰富了", "温暖了", "连接了", "启发了", "塑造了",
                 "装点了", "陪伴了"],
        "feel": ["喜悦", "平静", "自豪", "希望", "惊奇", "安慰", "怀念", "勇气", "耐心", "好奇"],
    },
}

# {t} is the topic; {adj2} draws from the "adj" pool (a second, different adjective).
TEMPLATES: dict[str, list[str]] = {
    "en": [
        "In {place}, {person} first wrote about {t} {time}.",
        "In {place}, {t} {verb} {thing} for {num} generations.",
        "{person} once said that {t} can bring {feel} to {thing}.",
        "Many visitors to {place} remember {t} as {adj} and full of {feel}.",
        "{time}, {person} would talk about {t} with {feel}.",
        "Old records from {place} describe {t} as {adj} and {adj2}.",
        "For {person}, {t} meant {feel} and {adj} {thing}.",
        "A museum in {place} keeps {num} old pictures of {t}.",
        "Long ago, {t} became part of {thing} in {place}.",
        "Every child in {place} learns about {t} {time}.",
        "Scholars still argue about how {t} {verb} {thing}.",
        "{person} from {place} spent {num} years studying {t}.",
        "The {adj} side of {t} is best seen {time}.",
        "Songs from {place} often praise {t} and the {feel} of {thing}.",
        "{time}, the streets of {place} fill with talk of {t}.",
        "Without {t}, {thing} in {place} would feel less {adj}.",
        "{person} keeps a notebook, {adj} and worn, full of notes on {t}.",
        "Some say {t} first arrived in {place} {num} centuries ago.",
        "A festival in {place} honours {t} {time}.",
        "Writers from {place} compare {t} to {adj} {thing}.",
        "In time, {t} taught {person} the value of {feel}.",
        "Travellers who reach {place} {time} often ask about {t}.",
        "The price of {t} in {place} rose {num} times last century.",
        "{person} believes {t} can make {thing} more {adj}.",
        "Photographs of {t} from {place} show a world both {adj} and {adj2}.",
        "Near {place}, {t} and {thing} have always gone together.",
        "An old tale from {place} tells how {t} {verb} {person}.",
        "Each year {num} families in {place} celebrate {t} {time}.",
        "{person} first saw {t} {time} and felt {feel}.",
        "Markets in {place} sell books about {t} {time}.",
    ],
    "zh": [
        "{time}，{place}的{person}第一次写下了关于{t}的文字。",
        "在{place}，{t}{verb}{thing}，已经延续了{num}代人。",
        "{person}曾经说过，{t}能给{thing}带来{feel}。",
        "很多去过{place}的人，都觉得那里的{t}{adj}又充满{feel}。",
        "{time}，{person}总会带着{feel}谈起{t}。",
        "{place}的旧档案把{t}描写得{adj}而{adj2}。",
        "对{person}来说，{t}意味着{feel}和{adj}的{thing}。",
        "{place}的一家博物馆收藏了{num}张关于{t}的老照片。",
        "很久以前，{t}就成了{place}{thing}的一部分。",
        "{place}的每个孩子{time}都会学习关于{t}的知识。",
        "学者们至今还在争论{t}是怎样{verb}{thing}的。",
        "来自{place}的{person}花了{num}年研究{t}。",
        "{t}最{adj}的一面，要在{time}才能看到。",
        "{place}的歌谣常常赞美{t}，也赞美{thing}里的{feel}。",
        "{time}，{place}的街头到处都在谈论{t}。",
        "要是没有{t}，{place}的{thing}就不会这么{adj}。",
        "{person}有一本{adj}的笔记本，记满了关于{t}的心得。",
        "有人说{t}是在{num}百年前传到{place}的。",
        "{place}有一个节日，专门在{time}纪念{t}。",
        "{place}的作家喜欢把{t}比作{adj}的{thing}。",
        "{t}教会了{person}懂得{feel}的可贵。",
        "{time}来到{place}的旅人，常常打听{t}的故事。",
        "上个世纪，{place}的{t}价格涨了{num}倍。",
        "{person}相信{t}能让{thing}变得更加{adj}。",
        "那些拍摄于{place}的{t}照片，展现了一个{adj}的世界。",
        "在{place}附近，{t}和{thing}向来密不可分。",
        "{place}流传着一个{adj}的故事，讲{t}怎样{verb}{person}。",
        "每到{time}，{place}都有{num}户人家庆祝{t}。",
        "{person}在{time}第一次见到{t}，心里充满了{feel}。",
        "{time}，{place}的集市上会卖关于{t}的书。",
    ],
}

# Instructions that ask for a long piece of writing (the judge says yes) ...
LONG_PHRASINGS: dict[str, list[str]] = {
    "en": [
        "Write a detailed essay about {t}.",
        "Compose a long article on {t}.",
        "Write a thorough guide to {t} for beginners.",
        "Please write an in-depth report on {t}.",
        "Tell me everything you know about {t} in a long essay.",
        "Write a long story centred on {t}.",
        "Describe {t} in great detail.",
        "Explain the history and importance of {t} at length.",
        "I need a comprehensive overview of {t}.",
        "Write a feature article for a magazine about {t}.",
        "Draft a lengthy blog post about {t}.",
        "Write an extensive report on the role of {t} in everyday life.",
        "Write a long reflective piece about {t}.",
        "Could you write a full chapter for a book about {t}?",
    ],
    "zh": [
        "请写一篇关于{t}的详细文章。",
        "写一篇介绍{t}的长文。",
        "请以{t}为题，写一篇深入的报告。",
        "给初学者写一份关于{t}的详尽指南。",
        "请详细描述{t}。",
        "写一个以{t}为中心的长篇故事。",
        "请全面介绍{t}的历史和意义。",
        "我需要一篇关于{t}的综合概述。",
        "为杂志写一篇关于{t}的专题文章。",
        "写一篇关于{t}的长篇博客。",
        "请写一份关于{t}在日常生活中作用的详细报告。",
        "围绕{t}写一篇长散文。",
        "请把你知道的关于{t}的一切写成一篇长文。",
        "能不能为一本关于{t}的书写完整的一章？",
    ],
}

# ... and instructions that want a short answer (the judge says no).
SHORT_PHRASINGS: dict[str, list[str]] = {
    "en": [
        "Give one fact about {t} in a single sentence.",
        "Describe {t} in five words.",
        "In one word, do you like {t}?",
        "Answer briefly: which colour do you link with {t}?",
        "Write a one-line caption about {t}.",
        "Name one city known for {t}.",
        "Is {t} expensive? Answer yes or no.",
        "Spell the word {t}.",
    ],
    "zh": [
        "用一句话说一个关于{t}的事实。",
        "用五个字形容{t}。",
        "用一个词回答：你喜欢{t}吗？",
        "{t}通常是什么颜色？简短回答。",
        "给{t}写一句简短的说明。",
        "说出一个以{t}闻名的城市。",
        "{t}贵吗？只回答是或否。",
        "{t}的英文怎么说？",
    ],
}

_SLOT = re.compile(r"\{(\w+)\}")


def topic_name(topic: int, lang: str) -> str:
    return TOPICS[topic][0 if lang == "en" else 1]


def instruction(rng: random.Random, lang: str, topic: int, long: bool = True) -> str:
    phrasings = (LONG_PHRASINGS if long else SHORT_PHRASINGS)[lang]
    return rng.choice(phrasings).format(t=topic_name(topic, lang))


def fill(rng: random.Random, lang: str, topic: int, aspect: int) -> str:
    """The sentence of one aspect (template) of a topic, its other slots filled at random."""
    chosen: dict[str, str] = {}

    def filler(match: re.Match) -> str:
        slot = match.group(1)
        if slot == "t":
            return topic_name(topic, lang)
        if slot == "adj2":  # a second adjective, never the first one again
            return rng.choice([a for a in SLOTS[lang]["adj"] if a != chosen.get("adj")])
        chosen[slot] = rng.choice(SLOTS[lang][slot])
        return chosen[slot]

    text = _SLOT.sub(filler, TEMPLATES[lang][aspect])
    return text[0].upper() + text[1:]


def aspects(rng: random.Random, lang: str, n: int) -> list[int]:
    """n aspects spread over the topic's whole range of aspects, in canonical order: the range
    is cut into n equal bins and each sentence takes one aspect of its bin. Every text walks
    from the first aspects to the last; a longer text walks with smaller steps."""
    count = len(TEMPLATES[lang])
    if not 1 <= n <= count:
        raise ValueError(f"a text has 1 to {count} sentences, not {n}")
    return [rng.randrange(j * count // n, (j + 1) * count // n) for j in range(n)]


def sentences(rng: random.Random, lang: str, topic: int, which: list[int]) -> list[str]:
    return [fill(rng, lang, topic, aspect) for aspect in which]
