"""The two classes of perceived gender, spelled as they are stored."""

from enum import StrEnum


class Label(StrEnum):
    FEMALE = "female"
    MALE = "male"


# The order of the classes in every head: a sigmoid output is the probability of LABEL_ORDER[1].
LABEL_ORDER: tuple[Label, Label] = (Label.FEMALE, Label.MALE)
