"""What the platform tells the coordinator about the labels hospitals train on.

Federated averaging learns little from hospitals that hold a single class: on the demo images,
Dirichlet 0.1 splits that left each of 4 hospitals one class stayed near chance over 20 rounds
with medfed's defaults. The single-class recipe (README, "Recipes": one local step a round on
GroupNorm, the server's momentum adding the steps up) learns from them.
The round loop notes each such hospital once per run, from the class counts its replies carry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

SINGLE_CLASS_SHARE = 0.95  # a hospital whose largest class holds this share of its images


def single_class_note(
    counts: Mapping[str, Sequence[int]], class_names: Sequence[str]
) -> str | None:
    """One line naming the hospitals of ``counts`` (images per class, by hospital name) whose
    largest class holds at least :data:`SINGLE_CLASS_SHARE` of their images, or None."""
    if len(class_names) < 2:
        return None
    found = []
    for hospital, per_class in sorted(counts.items()):
        total = sum(per_class)
        if total and max(per_class) >= SINGLE_CLASS_SHARE * total:
            top = max(range(len(per_class)), key=per_class.__getitem__)
            name = class_names[top] if top < len(class_names) else str(top)
            found.append(f"{hospital} ({per_class[top]} of its {total} images are {name!r})")
    if not found:
        return None
    return (
        f"{'; '.join(found)}: a hospital of a single class teaches the shared model little, and "
        "when every hospital is like this accuracy can stay near chance under medfed's defaults; "
        "train such hospitals with the single-class recipe (federated.local_steps 1, "
        "model.norm group, FedAvgM; see the README's Recipes) or mix their classes."
    )
