"""English → Spanish sentence pairs generated from a small bilingual grammar and lexicon, plus a reader
for a user's own pairs.

No parallel corpus ships in an installed package, so the pairs are generated: one random derivation
produces the English sentence and its Spanish translation together, which makes every reference correct
by construction. The word lists (nouns, adjectives, verbs and what they select, irregular present tenses,
pronouns, places, times) are data in ``translation_lexicon.json`` beside this module; the grammar that
combines them is the code below. The grammar is small but the agreement is real Spanish grammar:

- **Gender and number agreement.** Articles, demonstratives and ``nuestro`` agree with the noun
  (``el/la/los/las``, ``un/una``, ``este/esta/estos/estas``, ``ese/esa/esos/esas``,
  ``nuestro/nuestra/nuestros/nuestras``; ``mi/mis``, ``dos``, ``tres`` vary only in number or not at all),
  and so do adjectives (``rojo/roja/rojos/rojas``; ``verde/verdes``, ``azul/azules``, ``feliz/felices``,
  ``joven/jóvenes`` vary in number only).
- **Adjectives follow the noun**: *the red cats* → *los gatos rojos*.
- **Irregular plurals** are listed, not guessed: *lápiz/lápices*, *ratón/ratones* (the accent goes),
  *joven/jóvenes* (an accent comes), *paraguas/paraguas*; English *man/men*, *mouse/mice*.
- **Feminine nouns with a stressed initial a-** take ``el``/``un`` in the singular but stay feminine:
  *the cold water* → *el agua fría*, *this water* → *esta agua*.
- **Present-tense conjugation** by person and number, with the stem changes of *querer* (quiero),
  *cerrar* (cierro), *encontrar* (encuentro), *dormir* (duermo), *jugar* (juego), and the irregular
  *tener* (tengo), *ver* (veo), *reír* (río).
- **The personal a** before a direct object that is a specific person, contracted with ``el``:
  *I help the boy* → *Yo ayudo al niño*; never before things (*Yo veo la casa*). Animals are objects
  only of *have* (*tener*), which takes no personal a.
- **Phrasal verbs translate to one verb without a preposition**: *look for* → *buscar*, *look at* →
  *mirar*.
- **Negation** *do/does not V* → *no V*; **days** take the article, lower-case: *on Sundays* →
  *los domingos*; *in the morning* → *por la mañana*.
- **English a/an** follows the next word (*an old umbrella*), English 3rd-person -s/-es/-ies
  (*washes*, *carries*).

Subject pronouns are kept in the first reference (*Yo como*, a correct and unambiguous choice); the other
references drop the pronoun (Spanish is pro-drop: *Como*) or use the feminine plural (*nosotras*,
*ellas*) where English does not mark gender.

Example:
    >>> import numpy as np
    >>> pair = generate_pair(np.random.default_rng(0))
    >>> pair.source.endswith(".") and pair.target.endswith(".")
    True
    >>> s = noun_phrase("the", noun("cat"), True, "red")
    >>> sentence_pair(s, verb("eat"), noun_phrase("the", noun("apple"), False)).source
    'The red cats eat the apple.'
"""

from __future__ import annotations

import importlib.resources
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np

from text_env.data.sources import draw_splits, read_jsonl_records

_T = TypeVar("_T")

SPLIT_SALT = "translate-en-es-v1"
LEXICON_FILE = "translation_lexicon.json"  # nouns, adjectives, verbs, pronouns, places, times

# person index into the six present-tense forms: yo, tú, él/ella, nosotros, vosotros, ellos/ellas
FIRST_SG, SECOND_SG, THIRD_SG, FIRST_PL, SECOND_PL, THIRD_PL = range(6)


# ---- lexicon -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Noun:
    """A noun in both languages.

    Attributes:
        en / en_plural: English singular and plural.
        es / es_plural: Spanish singular and plural.
        gender: ``"m"`` or ``"f"`` (the Spanish grammatical gender).
        tags: Semantic classes verbs select on (``person``, ``animal``, ``thing``, ``food``, ``drink``,
            ``portable``, ``openable``...).
        adjectives: The adjective group the generator draws from (see ``ADJECTIVE_GROUPS``); any adjective
            is grammatical, the group keeps generated sentences sensible.
        mass: Uncountable (*bread*, *milk*): singular only, no *a* or numbers, may be bare as an object.
        stressed_a: A feminine noun starting with stressed a- (*agua*): ``el``/``un`` in the singular.
    """

    en: str
    en_plural: str
    es: str
    es_plural: str
    gender: str
    tags: frozenset[str]
    adjectives: str
    mass: bool = False
    stressed_a: bool = False


def _nouns(group: str, tags: list[str], rows: list[str], mass: bool, stressed_a: list[str]) -> list[Noun]:
    """Parse ``en en_plural es es_plural gender [extra,tags]`` rows (one a string)."""
    out = []
    for line in rows:
        parts = line.split()
        extra = parts[5].split(",") if len(parts) > 5 else []
        out.append(
            Noun(
                en=parts[0],
                en_plural=parts[1],
                es=parts[2],
                es_plural=parts[3],
                gender=parts[4],
                tags=frozenset(tags + extra),
                adjectives=group,
                mass=mass,
                stressed_a=parts[2] in stressed_a,
            )
        )
    return out


def _load_lexicon() -> dict[str, Any]:
    """The lexicon, a data file shipped next to this module (package data; read, never executed)."""
    text = importlib.resources.files("text_env.data").joinpath(LEXICON_FILE).read_text(encoding="utf-8")
    lexicon = json.loads(text)
    if lexicon.get("format") != "text_env.translation_lexicon" or lexicon.get("format_version") != 1:
        raise RuntimeError(f"{LEXICON_FILE} in text_env.data is not a version-1 lexicon; reinstall text-env")
    return lexicon


_LEXICON = _load_lexicon()

NOUNS: tuple[Noun, ...] = tuple(
    n
    for g in _LEXICON["nouns"]
    for n in _nouns(g["group"], g["tags"], g["rows"], g.get("mass", False), g.get("stressed_a", []))
)


@dataclass(frozen=True)
class Adjective:
    """An adjective: English form and the Spanish forms (masc. sg, fem. sg, masc. pl, fem. pl)."""

    en: str
    es_forms: tuple[str, str, str, str]

    def es(self, gender: str, plural: bool) -> str:
        return self.es_forms[(2 if plural else 0) + (1 if gender == "f" else 0)]


def _adjectives(rows: list[str]) -> dict[str, Adjective]:
    out = {}
    for line in rows:
        en, *forms = line.split()
        if len(forms) == 2:  # gender-invariant: singular, plural
            forms = [forms[0], forms[0], forms[1], forms[1]]
        out[en] = Adjective(en, tuple(forms))  # type: ignore[arg-type]
    return out


ADJECTIVES: dict[str, Adjective] = _adjectives(_LEXICON["adjectives"])

ADJECTIVE_GROUPS: dict[str, tuple[str, ...]] = {
    group: tuple(words) for group, words in _LEXICON["adjective_groups"].items()
}


@dataclass(frozen=True)
class Verb:
    """A verb: English base and 3rd-person-singular forms, the six Spanish present-tense forms, and what
    it selects.

    Attributes:
        subjects: Noun tags a subject may carry (pronoun subjects are people).
        objects: Noun tags a direct object may carry; ``()`` for an intransitive verb.
        intransitive: Whether the verb may also stand without an object (*she reads*).
        bare_objects: Whether a bare plural or mass object reads naturally (*I eat apples*).
    """

    en: str
    en_3sg: str
    es_forms: tuple[str, str, str, str, str, str]
    subjects: frozenset[str]
    objects: frozenset[str] = frozenset()
    intransitive: bool = False
    bare_objects: bool = False

    def es(self, person: int) -> str:
        return self.es_forms[person]

    def en_form(self, person: int) -> str:
        return self.en_3sg if person == THIRD_SG else self.en


_ENDINGS = {
    "ar": ("o", "as", "a", "amos", "áis", "an"),
    "er": ("o", "es", "e", "emos", "éis", "en"),
    "ir": ("o", "es", "e", "imos", "ís", "en"),
}


def conjugate_regular(infinitive: str) -> tuple[str, str, str, str, str, str]:
    """The present-tense forms of a regular -ar/-er/-ir verb.

    Example:
        >>> conjugate_regular("comer")
        ('como', 'comes', 'come', 'comemos', 'coméis', 'comen')
    """
    stem, ending = infinitive[:-2], infinitive[-2:]
    if ending not in _ENDINGS:
        raise ValueError(f"{infinitive!r} is not an -ar, -er or -ir infinitive")
    return tuple(stem + e for e in _ENDINGS[ending])  # type: ignore[return-value]


# irregular or stem-changing present tenses (Real Academia Española conjugation tables)
IRREGULAR_PRESENT: dict[str, tuple[str, str, str, str, str, str]] = {
    verb: tuple(forms) for verb, forms in _LEXICON["irregular_present"].items()
}


def conjugate(infinitive: str) -> tuple[str, str, str, str, str, str]:
    """Present-tense forms of a Spanish verb (listed irregulars, else the regular pattern)."""
    return IRREGULAR_PRESENT.get(infinitive) or conjugate_regular(infinitive)


def _verb(
    en: str,
    en_3sg: str,
    infinitive: str,
    subjects: list[str],
    objects: list[str] | None = None,
    intransitive: bool = False,
    bare_objects: bool = False,
) -> Verb:
    return Verb(
        en,
        en_3sg,
        conjugate(infinitive),
        frozenset(subjects),
        frozenset(objects) if objects else frozenset(),
        intransitive or not objects,
        bare_objects,
    )


VERBS: tuple[Verb, ...] = tuple(_verb(**v) for v in _LEXICON["verbs"])

_PERSONS = {
    "1sg": FIRST_SG,
    "2sg": SECOND_SG,
    "3sg": THIRD_SG,
    "1pl": FIRST_PL,
    "2pl": SECOND_PL,
    "3pl": THIRD_PL,
}

# (English, Spanish, person, feminine alternative)
PRONOUNS: tuple[tuple[str, str, int, str | None], ...] = tuple(
    (p["en"], p["es"], _PERSONS[p["person"]], p["feminine"]) for p in _LEXICON["pronouns"]
)

PLACES: tuple[tuple[str, str], ...] = tuple((en, es) for en, es in _LEXICON["places"])

# simple present reads as habitual, so the time expressions are habitual ones
TIMES: tuple[tuple[str, str], ...] = tuple((en, es) for en, es in _LEXICON["times"])

# determiner: English singular/plural forms (None: not allowed), and whether a mass noun takes it
DETERMINERS: dict[str, tuple[str | None, str | None, bool]] = {
    "the": ("the", "the", True),
    "a": ("a", None, False),
    "this": ("this", "these", True),
    "that": ("that", "those", True),
    "my": ("my", "my", True),
    "our": ("our", "our", True),
    "two": (None, "two", False),
    "three": (None, "three", False),
}


def spanish_determiner(det: str, noun: Noun, plural: bool) -> str:
    """The Spanish determiner agreeing with ``noun`` in gender and number.

    Example:
        >>> water = next(n for n in NOUNS if n.en == "water")
        >>> spanish_determiner("the", water, False), spanish_determiner("this", water, False)
        ('el', 'esta')
    """
    fem = noun.gender == "f"
    if det == "the":
        if plural:
            return "las" if fem else "los"
        # el agua: a feminine noun with stressed initial a- takes el in the singular (RAE, DPD "el")
        return "la" if fem and not noun.stressed_a else "el"
    if det == "a":
        if plural:
            raise ValueError("'a' takes a singular noun")
        return "una" if fem and not noun.stressed_a else "un"
    if det == "this":
        return ("estas" if fem else "estos") if plural else ("esta" if fem else "este")
    if det == "that":
        return ("esas" if fem else "esos") if plural else ("esa" if fem else "ese")
    if det == "my":
        return "mis" if plural else "mi"
    if det == "our":
        return ("nuestras" if fem else "nuestros") if plural else ("nuestra" if fem else "nuestro")
    if det in ("two", "three"):
        if not plural:
            raise ValueError(f"{det!r} takes a plural noun")
        return {"two": "dos", "three": "tres"}[det]
    raise ValueError(f"unknown determiner {det!r}; expected one of {sorted(DETERMINERS)}")


def english_article(next_word: str) -> str:
    """``a`` or ``an`` by the next word's first letter (every word in this lexicon that starts with a
    vowel letter starts with a vowel sound)."""
    return "an" if next_word[:1].lower() in "aeiou" else "a"


@dataclass(frozen=True)
class NounPhrase:
    """A noun phrase in both languages, with what agreement needs."""

    en: str
    es: str
    noun: Noun
    plural: bool
    person: int

    @property
    def es_with_personal_a(self) -> str:
        """``a`` + the phrase, contracting ``a el`` to ``al``."""
        return "al " + self.es[3:] if self.es.startswith("el ") else "a " + self.es


def noun_phrase(det: str | None, noun: Noun, plural: bool, adjective: str | None = None) -> NounPhrase:
    """Build a noun phrase: English *det adj noun*, Spanish *det noun adj* with agreement.

    ``det=None`` is a bare noun (a plural or a mass noun).

    Example:
        >>> cat = next(n for n in NOUNS if n.en == "cat")
        >>> noun_phrase("the", cat, True, "red").es
        'los gatos rojos'
    """
    if plural and noun.mass:
        raise ValueError(f"mass noun {noun.en!r} has no plural")
    if det is not None:
        en_sg, en_pl, mass_ok = DETERMINERS[det]
        if (plural and en_pl is None) or (not plural and en_sg is None) or (noun.mass and not mass_ok):
            raise ValueError(
                f"determiner {det!r} cannot go with {'plural' if plural else 'singular'} {noun.en!r}"
            )
    elif not (plural or noun.mass):
        raise ValueError(f"a bare noun must be plural or a mass noun, got singular {noun.en!r}")
    en_noun = noun.en_plural if plural else noun.en
    es_noun = noun.es_plural if plural else noun.es
    en_words = [en_noun]
    es_words = [es_noun]
    if adjective is not None:
        if adjective not in ADJECTIVES:
            raise ValueError(f"unknown adjective {adjective!r}; the lexicon has {sorted(ADJECTIVES)}")
        en_words.insert(0, adjective)
        es_words.append(ADJECTIVES[adjective].es(noun.gender, plural))  # adjectives follow the noun
    if det is not None:
        en_det = DETERMINERS[det][1 if plural else 0]
        assert isinstance(en_det, str)
        en_words.insert(0, english_article(en_words[0]) if det == "a" else en_det)
        es_words.insert(0, spanish_determiner(det, noun, plural))
    return NounPhrase(" ".join(en_words), " ".join(es_words), noun, plural, THIRD_PL if plural else THIRD_SG)


# ---- sentences -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TranslationPair:
    """An English sentence and its Spanish translations (the first is the reference; the others are also
    correct)."""

    source: str
    target: str
    alternatives: tuple[str, ...] = field(default=())

    @property
    def references(self) -> tuple[str, ...]:
        return (self.target, *self.alternatives)


def _choice(rng: np.random.Generator, items: Sequence[_T]) -> _T:
    return items[int(rng.integers(len(items)))]


def _sentence(words: Sequence[str]) -> str:
    text = " ".join(w for w in words if w)
    return text[0].upper() + text[1:] + "."


def _random_np(
    rng: np.random.Generator,
    tags: frozenset[str],
    subject: bool,
    allow_bare: bool,
    allow_indefinite: bool,
    exclude: Noun | None = None,
) -> NounPhrase:
    nouns = [n for n in NOUNS if n.tags & tags and n is not exclude]
    noun: Noun = _choice(rng, nouns)
    plural = (not noun.mass) and bool(rng.random() < 0.4)
    options: list[str | None] = []
    for det, (en_sg, en_pl, mass_ok) in DETERMINERS.items():
        if noun.mass and not mass_ok:
            continue
        if (en_pl if plural else en_sg) is None:
            continue
        if det == "a" and not allow_indefinite:
            continue
        # "my woman", "our king": possessives of people read oddly except for relatives
        if det in ("my", "our") and "person" in noun.tags and "kin" not in noun.tags:
            continue
        # "busca a un niño" wavers between specific (a) and not (no a); keep objects specific
        if det == "a" and not subject and "person" in noun.tags:
            continue
        options.append(det)
    if allow_bare and not subject and (plural or noun.mass):
        options.append(None)
    chosen = _choice(rng, options)
    adjective = None
    if rng.random() < 0.35:
        adjective = _choice(rng, ADJECTIVE_GROUPS[noun.adjectives])
    return noun_phrase(chosen, noun, plural, adjective)


def noun(en: str) -> Noun:
    """The lexicon's noun whose English singular is ``en``."""
    for n in NOUNS:
        if n.en == en:
            return n
    raise ValueError(f"unknown noun {en!r}; the lexicon has {sorted(n.en for n in NOUNS)}")


def verb(en: str) -> Verb:
    """The lexicon's verb whose English base form is ``en`` (e.g. ``"look for"``)."""
    for v in VERBS:
        if v.en == en:
            return v
    raise ValueError(f"unknown verb {en!r}; the lexicon has {sorted(v.en for v in VERBS)}")


def sentence_pair(
    subject: NounPhrase | str,
    verb: Verb,
    obj: NounPhrase | None = None,
    negated: bool = False,
    adverbial: str | None = None,
) -> TranslationPair:
    """Realize one clause in both languages.

    Args:
        subject: A noun phrase, or an English subject pronoun (``"I"``, ``"he"``, ``"she"``, ``"we"``,
            ``"they"``).
        verb: The verb; it agrees with the subject in person and number.
        obj: The direct object, if any; a person object takes the personal *a*.
        negated: *do/does not V* → *no V*.
        adverbial: An English place or time expression from ``PLACES`` / ``TIMES``.

    Example:
        >>> s = noun_phrase("the", noun("cat"), True, "red")
        >>> sentence_pair(s, verb("eat"), noun_phrase("the", noun("apple"), False)).target
        'Los gatos rojos comen la manzana.'
        >>> sentence_pair("I", verb("help"), noun_phrase("the", noun("boy"), False)).target
        'Yo ayudo al niño.'
    """
    alt_pronoun: str | None = None
    if isinstance(subject, str):
        match = [p for p in PRONOUNS if p[0] == subject]
        if not match:
            raise ValueError(
                f"unknown subject pronoun {subject!r}; expected one of {[p[0] for p in PRONOUNS]}"
            )
        en_subj, es_subj, person, alt_pronoun = match[0]
    else:
        en_subj, es_subj, person = subject.en, subject.es, subject.person
    if obj is None and not verb.intransitive:
        raise ValueError(f"verb {verb.en!r} needs an object")
    en_obj = es_obj = ""
    if obj is not None:
        if not verb.objects:
            raise ValueError(f"verb {verb.en!r} takes no object")
        en_obj = obj.en
        # the personal a marks a human direct object (RAE, Nueva gramática de la lengua española §34.8)
        es_obj = obj.es_with_personal_a if "person" in obj.noun.tags else obj.es
    if negated:
        en_verb = ("does not " if person == THIRD_SG else "do not ") + verb.en
        es_verb = "no " + verb.es(person)
    else:
        en_verb, es_verb = verb.en_form(person), verb.es(person)
    en_adv = es_adv = ""
    if adverbial is not None:
        table = dict(PLACES + TIMES)
        if adverbial not in table:
            raise ValueError(f"unknown adverbial {adverbial!r}; expected one of {sorted(table)}")
        en_adv, es_adv = adverbial, table[adverbial]
    source = _sentence([en_subj, en_verb, en_obj, en_adv])
    target = _sentence([es_subj, es_verb, es_obj, es_adv])
    alternatives = []
    if isinstance(subject, str):  # pro-drop, and the feminine plural pronoun where English does not say
        alternatives.append(_sentence([es_verb, es_obj, es_adv]))
        if alt_pronoun is not None:
            alternatives.append(_sentence([alt_pronoun, es_verb, es_obj, es_adv]))
    return TranslationPair(source, target, tuple(alternatives))


def generate_pair(rng: np.random.Generator) -> TranslationPair:
    """One random sentence pair: subject, verb (optionally negated), object, optional place or time.

    Example:
        >>> p = generate_pair(np.random.default_rng(1))
        >>> p.target[0].isupper() and p.target.endswith(".")
        True
    """
    v: Verb = _choice(rng, VERBS)
    subject: NounPhrase | str
    if "person" in v.subjects and rng.random() < 0.3:
        subject = str(_choice(rng, PRONOUNS)[0])
    else:
        subject = _random_np(rng, v.subjects, subject=True, allow_bare=False, allow_indefinite=True)
    negated = bool(rng.random() < 0.2)
    obj = None
    if v.objects and not (v.intransitive and rng.random() < 0.3):
        obj = _random_np(
            rng,
            v.objects,
            subject=False,
            allow_bare=v.bare_objects,
            allow_indefinite=not negated,  # "no come una manzana" stresses "not one"; keep the plain reading
            exclude=subject.noun if isinstance(subject, NounPhrase) else None,
        )
    r = rng.random()
    adverbial = None
    if r < 0.25:
        adverbial = str(_choice(rng, PLACES)[0])
    elif r < 0.5:
        adverbial = str(_choice(rng, TIMES)[0])
    return sentence_pair(subject, v, obj, negated, adverbial)


@lru_cache(maxsize=16)
def translation_pairs(
    sizes: tuple[int, int, int] = (20000, 1000, 1000), seed: int = 0
) -> dict[str, tuple[TranslationPair, ...]]:
    """Unique generated pairs per split; a sentence's split is a hash of its English side.

    Draws continue until each split holds its size, so the sizes are exact while split membership stays a
    pure function of the sentence (a bigger ``sizes`` adds sentences, never moves one).

    Raises:
        ValueError: A size is not a positive int.
    """
    return draw_splits(generate_pair, lambda pair: pair.source, sizes, seed, SPLIT_SALT, what="sentences")


def read_translation_pairs(path: str | os.PathLike) -> list[tuple[TranslationPair, str | None]]:
    """A user's pairs from JSONL: ``{"source": ..., "target": ...}`` or ``{"prompt": ..., "reference": ...}``
    per line, optionally with ``"split"``. Returns ``(pair, split or None)`` in file order.

    Raises:
        ValueError: A malformed row (the message names the file and line).

    Example:
        >>> read_translation_pairs("my_pairs.jsonl")  # doctest: +SKIP
        [(TranslationPair(source='Good morning.', target='Buenos días.', alternatives=()), None)]
    """
    rows = read_jsonl_records(path, (("source", "target"), ("prompt", "reference")), what="translation pairs")
    return [(TranslationPair(r["source"].strip(), r["target"].strip()), r.get("split")) for _, r in rows]


__all__ = [
    "ADJECTIVES",
    "ADJECTIVE_GROUPS",
    "NOUNS",
    "PLACES",
    "PRONOUNS",
    "TIMES",
    "VERBS",
    "Adjective",
    "Noun",
    "NounPhrase",
    "TranslationPair",
    "Verb",
    "conjugate",
    "conjugate_regular",
    "english_article",
    "generate_pair",
    "noun",
    "noun_phrase",
    "read_translation_pairs",
    "sentence_pair",
    "spanish_determiner",
    "translation_pairs",
    "verb",
]
