"""The vocabulary of the two synthetic worlds: visual attributes, non-visual facts, phrasing.

``wings`` mirrors the paper's BUTTERFLY set (species; Type 2 asks ecology facts) and
``heritage`` mirrors K-VISCUIT (cultural objects in 10 categories; Type 2 asks cultural
facts). Everything a renderer or a text generator needs to know about a world is here, so
the worlds differ in data, not in code paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Attribute:
    """A visual attribute: its values, and how a question and a description name it."""

    name: str
    values: tuple[str, ...]
    question: str  # attribute question asked about an image, with {thing}
    phrases: tuple[str, ...]  # description sentences with {value} (and {thing})
    #: Plausible option texts that no individual has, so that a question about an
    #: attribute with only three values still offers four options.
    extra_options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fact:
    """A non-visual fact (Type 2): its values and the question that asks it."""

    name: str
    values: tuple[str, ...]
    questions: tuple[str, ...]  # about the thing in the image, with {thing}
    statements: tuple[str, ...]  # world text, with {name} and {value}
    description: str  # how a full description mentions it, with {value}


@dataclass(frozen=True)
class World:
    name: str
    thing: str  # what one individual is called in questions: "butterfly", "object"
    attributes: tuple[Attribute, ...]
    facts: tuple[Fact, ...]
    categories: tuple[str, ...]
    #: Attribute that fixes the category: never varied inside a look-alike group.
    category_attribute: str
    type1_questions: tuple[str, ...]
    caption_templates: tuple[str, ...]  # with {appearance} and optionally {name}
    name_only_templates: tuple[str, ...]  # with {name}
    colours: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def attribute(self, name: str) -> Attribute:
        return next(a for a in self.attributes if a.name == name)


COLOURS = {
    "orange": (236, 124, 28),
    "blue": (40, 96, 214),
    "yellow": (240, 212, 40),
    "white": (244, 244, 238),
    "black": (28, 28, 30),
    "green": (46, 160, 72),
    "red": (206, 34, 40),
    "purple": (128, 56, 170),
    "brown": (122, 78, 40),
    "gold": (212, 170, 48),
    "pink": (236, 132, 176),
    "grey": (140, 140, 146),
}

WINGS = World(
    name="wings",
    thing="butterfly",
    attributes=(
        Attribute(
            "wing_shape",
            ("rounded", "pointed", "scalloped", "tailed"),
            "What is the shape of the wings of the {thing} in the image?",
            ("Its wings are {value}.", "The {thing} has {value} wings.", "It shows {value} wings."),
        ),
        Attribute(
            "wing_colour",
            ("orange", "blue", "yellow", "white", "black", "green", "red", "purple"),
            "What colour are the wings of the {thing} in the image?",
            ("The wings are mostly {value}.", "Its wing colour is {value}.", "It is a {value} {thing}."),
        ),
        Attribute(
            "spot_count",
            ("one spot", "two spots", "three spots"),
            "How many spots does each forewing of the {thing} in the image have?",
            ("Each forewing carries {value}.", "Each forewing bears {value}.", "It has {value} per forewing."),
            ("four spots",),
        ),
        Attribute(
            "spot_colour",
            ("white", "black", "yellow", "red", "blue"),
            "What colour are the spots on the wings of the {thing} in the image?",
            ("The spots are {value}.", "Its spots are {value}.", "The wing spots are {value}."),
        ),
        Attribute(
            "band",
            ("no band", "a single band", "a double band"),
            "What band pattern crosses the forewings of the {thing} in the image?",
            ("The forewings show {value}.", "It has {value} across the forewings.", "Its forewings carry {value}."),
            ("a triple band",),
        ),
        Attribute(
            "margin",
            ("plain", "dark", "pale"),
            "What kind of margin edges the wings of the {thing} in the image?",
            ("The wing margin is {value}.", "Its wings have a {value} margin.", "A {value} margin edges the wings."),
            ("spotted",),
        ),
    ),
    facts=(
        Fact(
            "host_plant",
            ("nettle", "thistle", "clover", "willow", "violet", "milkweed", "fennel", "oak",
             "lupine", "sorrel", "hop", "bramble"),
            ("Which plant do the caterpillars of the {thing} in the image feed on?",
             "On which host plant does the {thing} in the image lay its eggs?"),
            ("The caterpillars of the {name} feed on {value}.", "The {name} lays its eggs on {value}.",
             "{value} is the host plant of the {name}."),
            "Its caterpillars feed on {value}.",
        ),
        Fact(
            "region",
            ("the northern highlands", "the coastal dunes", "the river valleys", "the eastern forests",
             "the southern plains", "the alpine meadows", "the western marshes", "the island cliffs"),
            ("Where does the {thing} in the image live?", "In which region is the {thing} in the image found?"),
            ("The {name} lives in {value}.", "The {name} is found in {value}.",
             "In {value} one finds the {name}."),
            "It lives in {value}.",
        ),
        Fact(
            "season",
            ("early spring", "late spring", "midsummer", "late summer", "autumn"),
            ("When does the {thing} in the image fly?", "In which season is the {thing} in the image on the wing?"),
            ("The {name} flies in {value}.", "The {name} is on the wing in {value}.",
             "Adults of the {name} appear in {value}."),
            "It flies in {value}.",
        ),
    ),
    categories=("Nymphs", "Darters", "Anglewings", "Swallowtails"),
    category_attribute="wing_shape",
    type1_questions=(
        "Which species is the butterfly in the image?",
        "What is the name of the butterfly shown in the image?",
        "Which species of butterfly is shown?",
    ),
    caption_templates=(
        "A photo of a {name}: {appearance}",
        "This is a {name}. {appearance}",
        "An image of the {name}. {appearance}",
    ),
    name_only_templates=("A photo of a {name}.", "The image shows a {name}.", "This is a {name}."),
    colours=COLOURS,
)

HERITAGE_KINDS = {
    # category -> the kind of object drawn and named in it
    "Food": "dish",
    "Beverage": "cup",
    "GamePlay": "board",
    "Celebrations": "lantern",
    "Religion": "bell",
    "Tool": "fan",
    "Clothes": "robe",
    "Heritage": "crown",
    "Architecture": "hall",
    "Agriculture": "basket",
}

HERITAGE = World(
    name="heritage",
    thing="object",
    attributes=(
        Attribute(
            "kind",
            tuple(HERITAGE_KINDS.values()),
            "What kind of object is shown in the image?",
            ("It is a {value}.", "The object is a {value}.", "This is a kind of {value}."),
        ),
        Attribute(
            "colour",
            ("red", "blue", "green", "yellow", "white", "black", "purple", "brown"),
            "What is the main colour of the {thing} in the image?",
            ("Its main colour is {value}.", "The {thing} is mostly {value}.", "It is coloured {value}."),
        ),
        Attribute(
            "pattern",
            ("plain", "striped", "dotted", "zigzag", "checked"),
            "What pattern decorates the {thing} in the image?",
            ("Its surface is {value}.", "The {thing} has a {value} surface.", "The decoration is {value}."),
        ),
        Attribute(
            "trim",
            ("gold", "black", "white", "red", "blue"),
            "What colour is the trim of the {thing} in the image?",
            ("It has {value} trim.", "The trim is {value}.", "A {value} trim runs along its edge."),
        ),
        Attribute(
            "ornament",
            ("no ornament", "a knot", "a ring", "a diamond"),
            "Which ornament is on the {thing} in the image?",
            ("It bears {value}.", "In its centre is {value}.", "The {thing} carries {value}."),
        ),
        Attribute(
            "proportion",
            ("tall", "wide", "square"),
            "What are the proportions of the {thing} in the image?",
            ("It is {value} in shape.", "The {thing} is {value}.", "Its proportions are {value}."),
            ("round",),
        ),
    ),
    facts=(
        Fact(
            "occasion",
            ("the new year", "the harvest festival", "weddings", "ancestral rites", "coming-of-age days",
             "the spring festival", "full-moon nights", "royal banquets"),
            ("On which occasion is the {thing} in the image traditionally used?",
             "For which occasion is the {thing} in the image made?"),
            ("The {name} is used at {value}.", "People bring out the {name} for {value}.",
             "The {name} belongs to {value}."),
            "It is traditionally used at {value}.",
        ),
        Fact(
            "region",
            ("Hallan province", "Dorim island", "the Seba coast", "the Moran valley", "Kesong city",
             "the Ural hills", "Pyeon plains", "Nara harbour"),
            ("Which region does the {thing} in the image come from?",
             "Where does the tradition of the {thing} in the image originate?"),
            ("The {name} comes from {value}.", "The {name} originated in {value}.",
             "The tradition of the {name} began in {value}."),
            "It comes from {value}.",
        ),
        Fact(
            "era",
            ("the ancient kingdoms", "the early dynasty", "the middle dynasty", "the late dynasty",
             "the modern era"),
            ("In which era did the {thing} in the image first appear?",
             "From which period does the {thing} in the image date?"),
            ("The {name} first appeared in {value}.", "The {name} dates from {value}.",
             "The {name} was first made in {value}."),
            "It dates from {value}.",
        ),
    ),
    categories=tuple(HERITAGE_KINDS),
    category_attribute="kind",
    type1_questions=(
        "What is the name of the object in the image?",
        "Which traditional object is shown in the image?",
        "What is this object called?",
    ),
    caption_templates=(
        "A photo of a {name}: {appearance}",
        "This is a {name}. {appearance}",
        "An image of the {name}. {appearance}",
    ),
    name_only_templates=("A photo of a {name}.", "The image shows a {name}.", "This is a {name}."),
    colours=COLOURS,
)

WORLDS = {w.name: w for w in (WINGS, HERITAGE)}

# Syllables for made-up names: pronounceable, and unlike any real species or object.
ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "ch", "sh", "th")
NUCLEI = ("a", "e", "i", "o", "u", "ai", "ei", "ou")
CODAS = ("", "", "", "n", "l", "r", "s", "th")
