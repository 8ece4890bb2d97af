"""A small aclImdb-format archive, made in the test, for elman.keras.datasets.imdb (never the
network): reviews built from a few sentiment words, so a model can learn something."""
import hashlib
import importlib.util
import io
import os
import tarfile

import numpy as np

POSITIVE = ["great", "superb", "loved", "wonderful", "joy", "best"]
NEGATIVE = ["awful", "dull", "boring", "worst", "hated", "mess"]
FILLER = ["the", "film", "a", "plot", "and", "it", "was", "actors", "story", "of"]


def reviews(n_per_class: int, seed: int):
    """{member name: text} for train and test, ``n_per_class`` of each label and split."""
    rng = np.random.default_rng(seed)
    members = {}
    for split in ("train", "test"):
        for label, words in (("pos", POSITIVE), ("neg", NEGATIVE)):
            for k in range(n_per_class):
                length = int(rng.integers(8, 40))
                text = [str(rng.choice(FILLER)) for _ in range(length)]
                for _ in range(3):
                    text[int(rng.integers(length))] = str(rng.choice(words))
                rating = 8 if label == "pos" else 2
                members[f"aclImdb/{split}/{label}/{k}_{rating}.txt"] = \
                    " ".join(text).capitalize() + ".<br /><br />The end!"
    return members


def make_archive(path, n_per_class: int = 20, seed: int = 0):
    """Write the archive; returns (file:// URL, its SHA-256)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, text in reviews(n_per_class, seed).items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest()


def use_tiny_imdb(monkeypatch, tmp_path, n_per_class: int = 20):
    """Point elman.keras.datasets.imdb at a fresh small archive and an empty cache."""
    from elman.keras.datasets import imdb
    url, sha = make_archive(tmp_path / "tiny_aclImdb.tar.gz", n_per_class)
    monkeypatch.setattr(imdb, "URL", url)
    monkeypatch.setattr(imdb, "SHA256", sha)
    monkeypatch.setenv("ELMAN_CACHE", str(tmp_path / "cache"))
    return imdb


def run_seed001_example(monkeypatch, tmp_path, argv):
    """examples/seed001_keras.py's main(argv) on a small archive; returns what main returns."""
    use_tiny_imdb(monkeypatch, tmp_path, n_per_class=20)
    path = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "seed001_keras.py")
    spec = importlib.util.spec_from_file_location("seed001_keras", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)
