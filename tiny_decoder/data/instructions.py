"""An instruction set made offline from TinyStories itself, in the spirit of TinyStories-Instruct.

Eldan & Li (2023) built TinyStories-Instruct from each story's words, features and summary.
Here every story becomes one conversation whose answer is the story (or its continuation):
- "words": "Write a story that uses the words: dog, ball, happy." -> the story, which contains
  them (three content words drawn from the story's first `words_within` words, 30 by default,
  listed in the order the story uses them: the answer uses the requested words early, a pattern a
  small model learns in a few minutes; drawn from anywhere in the story the same fine-tuning moved
  the score far less, see the README);
- "beginning": "Write a story that begins with: <first sentence>" -> the rest of the story.
`per_story` > 1 makes several conversations from each story (other word choices, the same split):
more examples of the copying skill without more stories.
Deterministic: the choices for a story depend on (seed, story text) only. The train/validation
side of a story is its text's hash (data.in_validation), so a story and everything made from
it never sit on both sides.
"""

import hashlib
import random
import re

from .corpus import in_validation

STOPWORDS = set(
    """
a an the and or but so then than that this these those there their they them he she it its his her him we you
your our i me my mine is are was were be been being am do does did done have has had not no yes very too also
just only all any some many much more most one two three once upon time day said says say with without from into
onto over under out up down off on in at to of for by as if when while what who whom whose which where why how
can could will would shall should may might must let lets get got go went going come came see saw look looked
like liked want wanted know knew make made take took give gave put felt feel again after before because about
back away now here every each other another something anything nothing everyone everything someone
""".split()
)
WORD = re.compile(r"[A-Za-z]+")


def content_words(story: str) -> list[str]:
    """Distinct words of 3+ letters that are not stopwords, in order of first use.

    Lower case, except a word the story always capitalises (a name: "Lily"), which keeps its
    capital so the instruction holds the same token the answer uses.
    """
    forms: dict[str, set[str]] = {}
    for w in WORD.findall(story):
        if len(w) >= 3 and w.lower() not in STOPWORDS:
            forms.setdefault(w.lower(), set()).add(w)
    return [w.capitalize() if all(f[0].isupper() for f in fs) else w for w, fs in forms.items()]


def _rng(story: str, seed: int) -> random.Random:
    return random.Random(int.from_bytes(hashlib.blake2b(f"{seed}\0{story}".encode(), digest_size=8).digest(), "big"))


def words_instruction(words: list[str]) -> str:
    return f"Write a story that uses the words: {', '.join(words)}."


def story_to_conversation(story: str, seed: int = 0, n_words: int = 3, words_within: int | None = 30) -> dict | None:
    """One conversation (with the requested words kept for evaluation), or None for a story too short."""
    story = story.strip()
    rng = _rng(story, seed)
    sentences = re.split(r"(?<=[.!?])\s+", story, maxsplit=1)
    if len(sentences) == 2 and len(sentences[1]) > 40 and rng.random() < 1 / 3:
        first, rest = sentences
        return {
            "messages": [
                {"role": "user", "content": f"Write a story that begins with: {first}"},
                {"role": "assistant", "content": rest},
            ],
            "task": "beginning",
        }
    head = story if words_within is None else " ".join(story.split()[:words_within])
    words = content_words(head)
    if len(words) < n_words:
        return None
    chosen = sorted(rng.sample(words, n_words), key=words.index)
    return {
        "messages": [{"role": "user", "content": words_instruction(chosen)}, {"role": "assistant", "content": story}],
        "task": "words",
        "words": chosen,
    }


def build_instruction_set(
    stories, seed: int = 0, validation_fraction: float = 0.1, n_words: int = 3, words_within: int | None = 30, per_story: int = 1
) -> dict:
    """{"train": [...], "validation": [...]} conversations, split by each story's hash.

    Validation keeps one conversation per story (a fixed evaluation set); train gets `per_story`.
    """
    if per_story < 1:
        raise ValueError(f"per_story must be >= 1, got {per_story}.")
    out = {"train": [], "validation": []}
    for story in stories:
        side = "validation" if in_validation(story.strip(), validation_fraction) else "train"
        made = []
        for k in range(1 if side == "validation" else per_story):
            conv = story_to_conversation(story, seed + k, n_words, words_within)
            if conv is not None and conv not in made:  # a short story may give the same choice twice
                made.append(conv)
        out[side].extend(made)
    return out


def words_present(text: str, words: list[str]) -> float:
    """The fraction of `words` that occur in `text` as whole words (case-insensitive)."""
    found = {w.lower() for w in WORD.findall(text)}
    return sum(w.lower() in found for w in words) / len(words)
