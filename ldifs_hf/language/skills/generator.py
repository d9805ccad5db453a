"""The skills as text: each skill draws (prompt, answer) pairs, deterministically from a seed.

    7+5 mod 10=2            add       (modular arithmetic: the table of a fixed modulus)
    copy kqzt=kqzt          copy      (a random lowercase string, copied)
    reverse kqzt=tzqk       reverse   (the same, reversed)
    capital of Zorvia=Quenth  capital (a made-up atlas: a country's capital, a fixed list of facts)
    shift kqzt=lray         shift     (each letter moved one on, z to a: the NEW skill, never pre-trained)

A prompt ends with "=" and its answer with a newline, which is where greedy generation stops. The
old skills are what the tiny model is pre-trained on; "shift" shares copy's and reverse's form and
their letters, so fine-tuning on it alone interferes with them, which is the forgetting to measure.
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass
from typing import Callable

import numpy as np

LETTERS = string.ascii_lowercase
# Made-up names are built from syllables, so they look alike (no skill is learnable from the name's shape).
_SYLLABLES = ("zor", "vi", "quen", "th", "mal", "dra", "ke", "lo", "sun", "pre", "ta", "bor", "nis", "ul", "fe",
              "gan", "ri", "os", "wel", "cy", "ha", "mon", "e", "ak")
END = "\n"


@dataclass(frozen=True)
class Skill:
    """A skill: its name, one example in words, and `draw(rng, world) -> (prompt, answer)`."""

    name: str
    example: str
    draw: Callable[[np.random.Generator, "SkillsWorld"], tuple[str, str]]
    finite: bool = False  # True: the skill is a fixed table of facts (every item can be listed)

    def text(self, prompt: str, answer: str) -> str:
        """The line a model reads and writes: prompt, answer, newline."""
        return prompt + answer + END


@dataclass(frozen=True)
class SkillsWorld:
    """The facts a seed fixes: the modulus of "add", the string lengths, the atlas."""

    seed: int = 0
    modulus: int = 10
    min_length: int = 3
    max_length: int = 5
    num_countries: int = 40

    def atlas(self) -> list[tuple[str, str]]:
        """(country, capital) pairs: distinct made-up names, the same for the same seed."""
        return list(_atlas(self.seed, self.num_countries))

    def random_string(self, rng: np.random.Generator) -> str:
        length = int(rng.integers(self.min_length, self.max_length + 1))
        return "".join(rng.choice(list(LETTERS), size=length))

    def table(self, skill: Skill) -> list[tuple[str, str]]:
        """Every (prompt, answer) of a finite skill, in a fixed order."""
        if skill.name == "add":
            return [_add_item(a, b, self.modulus) for a in range(self.modulus) for b in range(self.modulus)]
        if skill.name == "capital":
            return [(f"capital of {country}=", capital) for country, capital in self.atlas()]
        raise ValueError(f"skill {skill.name!r} is not a table of facts; finite skills: add, capital")

    def sample(self, skill: Skill, count: int, stream: int) -> list[tuple[str, str]]:
        """`count` (prompt, answer) pairs of `skill`, drawn from stream `stream` of this world's seed."""
        rng = np.random.default_rng([self.seed, stream, _skill_index(skill.name)])
        return [skill.draw(rng, self) for _ in range(count)]


@functools.lru_cache(maxsize=8)
def _atlas(seed: int, num_countries: int) -> tuple[tuple[str, str], ...]:
    rng = np.random.default_rng([seed, 101])
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < 2 * num_countries:
        name = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4)))).capitalize()
        if name not in seen and len(name) <= 10:
            seen.add(name)
            names.append(name)
    return tuple(zip(names[:num_countries], names[num_countries:]))


def _add_item(a: int, b: int, modulus: int) -> tuple[str, str]:
    return f"{a}+{b} mod {modulus}=", str((a + b) % modulus)


def _draw_add(rng, world):
    return _add_item(int(rng.integers(world.modulus)), int(rng.integers(world.modulus)), world.modulus)


def _draw_copy(rng, world):
    s = world.random_string(rng)
    return f"copy {s}=", s


def _draw_reverse(rng, world):
    s = world.random_string(rng)
    return f"reverse {s}=", s[::-1]


def _draw_capital(rng, world):
    country, capital = _atlas(world.seed, world.num_countries)[int(rng.integers(world.num_countries))]
    return f"capital of {country}=", capital


def shift_letters(text: str) -> str:
    """Each lowercase letter moved one on in the alphabet, z to a."""
    return "".join(LETTERS[(LETTERS.index(c) + 1) % 26] for c in text)


def _draw_shift(rng, world):
    s = world.random_string(rng)
    return f"shift {s}=", shift_letters(s)


OLD_SKILLS = (
    Skill("add", "7+5 mod 10=2", _draw_add, finite=True),
    Skill("copy", "copy kqzt=kqzt", _draw_copy),
    Skill("reverse", "reverse kqzt=tzqk", _draw_reverse),
    Skill("capital", "capital of Zorvia=Quenth", _draw_capital, finite=True),
)
NEW_SKILL = Skill("shift", "shift kqzt=lray", _draw_shift)
SKILLS = OLD_SKILLS + (NEW_SKILL,)


def get_skill(name: str) -> Skill:
    for skill in SKILLS:
        if skill.name == name:
            return skill
    raise ValueError(f"unknown skill {name!r}; skills: {', '.join(s.name for s in SKILLS)}")


def _skill_index(name: str) -> int:
    return [s.name for s in SKILLS].index(name)
