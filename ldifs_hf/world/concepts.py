"""The concepts of the embedded world: their values, how each is drawn and how captions name it.

Pure data. Every image carries one value of every concept, drawn independently, so a model that
forgets one concept while learning another shows up as a drop on that concept's own task.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Concept:
    """One independent property of a world image.

    Attributes:
        name: the concept's name, also the suffix of its benchmark ("world-colour").
        values: the value names, in label order; they are the task's class names and appear verbatim
            in captions.
        templates: zero-shot prompts for the concept's task ("{}" is the value); each is a phrasing the
            caption generator also produces, so they are in distribution.
    """

    name: str
    values: tuple[str, ...]
    templates: tuple[str, ...]


DIGIT = Concept(
    name="digit",
    values=tuple(str(d) for d in range(10)),
    templates=("a photo of the digit {}.", "a photo of the number {}."),
)
COLOUR = Concept(
    name="colour",
    values=("red", "green", "blue", "yellow", "purple", "white"),
    templates=("a photo of a {} digit.", "a photo of a {} number."),
)
TEXTURE = Concept(
    name="texture",
    values=("plain", "striped", "checkered", "dotted", "noisy"),
    templates=("a photo of a digit on a {} background.", "a photo of a number on a {} background."),
)
POSITION = Concept(
    name="position",
    values=("top left", "top right", "bottom left", "bottom right"),
    templates=("a photo of a digit in the {}.", "a photo of a number in the {}."),
)

CONCEPTS: tuple[Concept, ...] = (DIGIT, COLOUR, TEXTURE, POSITION)

# RGB of each colour value, in COLOUR.values order; saturated so they stand out of the grey textures.
COLOUR_RGB: tuple[tuple[int, int, int], ...] = (
    (230, 40, 40),
    (40, 200, 60),
    (50, 90, 240),
    (240, 220, 40),
    (170, 60, 220),
    (245, 245, 245),
)
# Grey levels of the background: the base, and the texture's marks drawn over it.
BACKGROUND_GREY = 40
TEXTURE_GREY = 100


def get_concept(name: str) -> Concept:
    """The concept called `name`; a ValueError lists the valid names."""
    for concept in CONCEPTS:
        if concept.name == name:
            return concept
    raise ValueError(f"unknown world concept {name!r}; valid: {[c.name for c in CONCEPTS]}")
