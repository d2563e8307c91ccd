"""Splitting one dataset across simulated hospitals: IID, label skew, pathological, quantity skew.

Every scheme is seeded, and returns disjoint index arrays that together cover every sample,
with no hospital left empty.

- ``iid``: a random permutation cut into near-equal parts.
- ``dirichlet``: label skew; each class is shared out by proportions drawn from
  Dirichlet(alpha). Small alpha = each hospital sees few classes.
- ``shards``: pathological split; samples sorted by label are cut into
  ``num_clients * classes_per_client`` shards and each hospital gets ``classes_per_client``.
- ``quantity``: quantity skew; hospital sizes drawn from Dirichlet(alpha), labels random.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfed.errors import DataError

SCHEMES = ("iid", "dirichlet", "shards", "quantity")
DIRICHLET_TRIES = 100
DIRICHLET_MIN_SIZE = 10


def partition_indices(
    labels: np.ndarray,
    num_clients: int,
    scheme: str = "iid",
    alpha: float = 0.5,
    classes_per_client: int = 1,
    seed: int = 42,
) -> list[np.ndarray]:
    """Sorted int64 sample indices of each of ``num_clients`` hospitals."""
    labels = np.asarray(labels)
    _check_arguments(len(labels), num_clients, scheme, alpha, classes_per_client)
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        parts = np.array_split(rng.permutation(len(labels)), num_clients)
    elif scheme == "dirichlet":
        parts = _dirichlet(labels, num_clients, alpha, rng)
    elif scheme == "shards":
        parts = _shards(labels, num_clients, classes_per_client, rng)
    else:
        parts = _quantity(len(labels), num_clients, alpha, rng)
    return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]


def partition_counts(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Samples per class at each hospital: int64 (clients, classes)."""
    labels = np.asarray(labels)
    return np.stack([np.bincount(labels[part], minlength=num_classes) for part in parts])


def plot_partition(
    counts: np.ndarray, class_names: list[str], out_png: Path, title: str | None = None
) -> Path:
    """Save a stacked bar chart (one bar per hospital, one colour per class) as a PNG."""
    from matplotlib.figure import Figure

    clients = np.arange(len(counts))
    figure = Figure(figsize=(max(6.0, 0.5 * len(counts) + 2), 4.5), layout="constrained")
    axes = figure.add_subplot()
    bottom = np.zeros(len(counts))
    colours = _class_colours(len(class_names))
    for index, name in enumerate(class_names):
        axes.bar(clients, counts[:, index], bottom=bottom, label=name, color=colours[index])
        bottom += counts[:, index]
    axes.set_xticks(clients, [f"H{k}" for k in clients])
    axes.set_xlabel("hospital")
    axes.set_ylabel("images")
    summary = f"{int(counts.sum())} images across {len(counts)} hospitals"
    axes.set_title(f"{title}: {summary}" if title else summary)
    axes.legend(title="class", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=120)
    return out_png


def _class_colours(count: int) -> list:
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(index % palette.N) for index in range(count)]


def _check_arguments(
    num_samples: int, num_clients: int, scheme: str, alpha: float, classes_per_client: int
) -> None:
    if scheme not in SCHEMES:
        raise DataError(f"unknown partition scheme {scheme!r}: use one of {', '.join(SCHEMES)}")
    if num_clients < 1:
        raise DataError(f"the number of hospitals must be at least 1, not {num_clients}")
    if num_clients > num_samples:
        raise DataError(
            f"cannot split {num_samples} images across {num_clients} hospitals without leaving "
            "one empty: use fewer hospitals or more data"
        )
    if alpha <= 0:
        raise DataError(f"partition alpha must be positive, not {alpha}")
    if classes_per_client < 1:
        raise DataError(f"classes_per_client must be at least 1, not {classes_per_client}")
    if scheme == "shards" and num_clients * classes_per_client > num_samples:
        raise DataError(
            f"shards: {num_clients} hospitals x {classes_per_client} classes need at least "
            f"{num_clients * classes_per_client} images, only {num_samples}: lower "
            "classes_per_client or the number of hospitals"
        )


def _dirichlet(
    labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Per class, shares ~ Dirichlet(alpha); redraw while a hospital is too small, else repair.

    Too small: fewer than ``DIRICHLET_MIN_SIZE`` samples (or half an equal share, if less).
    """
    wanted = max(1, min(DIRICHLET_MIN_SIZE, len(labels) // (2 * num_clients)))
    best: list[np.ndarray] = []
    for _ in range(DIRICHLET_TRIES):
        parts = _dirichlet_draw(labels, num_clients, alpha, rng)
        smallest = min(len(part) for part in parts)
        if smallest >= wanted:
            return parts
        if not best or smallest > min(len(part) for part in best):
            best = parts
    return _fill_empty(best)


def _dirichlet_draw(
    labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    pieces: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
        for client, piece in enumerate(np.split(members, cuts)):
            pieces[client].append(piece)
    return [np.concatenate(chunks) for chunks in pieces]


def _fill_empty(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Give each empty hospital one sample from the currently largest one."""
    parts = list(parts)
    for client, part in enumerate(parts):
        if not len(part):
            largest = max(range(len(parts)), key=lambda k: len(parts[k]))
            parts[client], parts[largest] = parts[largest][-1:], parts[largest][:-1]
    return parts


def _shards(
    labels: np.ndarray, num_clients: int, classes_per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    shuffled = rng.permutation(len(labels))
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shards = np.array_split(by_label, num_clients * classes_per_client)
    owner = rng.permutation(len(shards)) % num_clients
    return [
        np.concatenate([shards[s] for s in np.flatnonzero(owner == k)]) for k in range(num_clients)
    ]


def _quantity(
    num_samples: int, num_clients: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """One sample each, the rest shared out by sizes drawn from Dirichlet(alpha)."""
    shares = rng.dirichlet(np.full(num_clients, alpha))
    sizes = 1 + rng.multinomial(num_samples - num_clients, shares)
    return np.split(rng.permutation(num_samples), np.cumsum(sizes)[:-1])
