"""`HFEncoder`: a Hugging Face transformer with its pooling, as one frugalml model: named inputs in
(`input_ids`, `attention_mask`, optional `token_type_ids`, or one `Features` batch holding them), one
tensor out (the sentence embedding, or a classifier's logits).

BERT-style encoders (`embeddings` + `encoder.layer`) are run layer by layer with a plain additive
attention mask and eager attention, not through the library's `forward`: its mask helpers branch on
the data (whether a batch has padding), which exporters and tracers would freeze into the graph.
Other architectures are called through their own forward.

Weights load from safetensors only (never pickle) and no remote code runs. The ModelSpec records the
config, so an artifact rebuilds the architecture (pruned or with dropped layers) offline.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from frugalml.data.features import Features
from frugalml.errors import ConfigError
from frugalml.hf.source import POOLINGS, pooling_of, read_config, require_transformers, resolve

# config keys that only describe where a checkpoint came from: left out of the ModelSpec
_NOISE = ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "_attn_implementation_autoset",
          "gradient_checkpointing", "output_attentions", "output_hidden_states")


class HFEncoder(nn.Module):
    def __init__(self, backbone: nn.Module, pooling: str = "mean", normalize: bool = False) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"model: pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
        self.backbone = backbone
        self.pooling, self.normalize = pooling, bool(normalize)

    # --- forward ---------------------------------------------------------------------------------
    def forward(self, input_ids: Any, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(input_ids, Mapping):  # one Features batch (or a dict) holding every input
            attention_mask = input_ids.get("attention_mask", attention_mask)
            token_type_ids = input_ids.get("token_type_ids", token_type_ids)
            input_ids = input_ids["input_ids"]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if self.pooling == "logits":
            out = self.backbone(**_inputs(input_ids, attention_mask, token_type_ids))
            return out.logits if hasattr(out, "logits") else out[0]
        hidden = self.encode(input_ids, attention_mask, token_type_ids)
        pooled = pool(hidden, attention_mask, self.pooling)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               token_type_ids: torch.Tensor | None) -> torch.Tensor:
        """Token states (batch, tokens, hidden)."""
        bb = self.backbone
        if not is_bert_style(bb):
            out = bb(**_inputs(input_ids, attention_mask, token_type_ids))
            return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        h = bb.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        # additive bias: 0 where attended, the dtype's most negative value at padding
        bias = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
        for layer in bb.encoder.layer:
            out = layer(h, bias)
            h = out[0] if isinstance(out, (tuple, list)) else out
        return h

    # --- what frugalml asks of a model ------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def output_width(self) -> int:
        return int(self.backbone.config.num_labels) if self.pooling == "logits" else self.hidden_size

    def example_input(self, batch: int = 1, tokens: int = 16) -> Features:
        """A valid input (token ids within the vocabulary, full mask) for smoke tests and tracing."""
        vocab = int(getattr(self.backbone.config, "vocab_size", 100))
        ids = (torch.arange(batch * tokens).view(batch, tokens) * 7919) % max(vocab - 1, 1) + 1
        return Features({"input_ids": ids.long(), "attention_mask": torch.ones(batch, tokens, dtype=torch.long)})

    def config_dict(self) -> dict:
        cfg = self.backbone.config.to_dict()
        return {k: v for k, v in cfg.items() if k not in _NOISE and not k.startswith("_")}

    def attentions(self) -> list[nn.Module]:
        return [m for m in self.modules() if _is_attention(m)]

    def pruning_num_heads(self) -> dict[nn.Module, int]:
        """{query/key/value Linear: heads} of every self-attention, for Torch-Pruning's `num_heads`."""
        return {getattr(a, p): int(a.num_attention_heads) for a in self.attentions() for p in ("query", "key", "value")}

    def pruning_ignored_layers(self) -> list[nn.Module]:
        """Layers writing the residual stream (attention output, FFN output, pooler): the hidden width
        is shared by every layer and the embeddings, so structured pruning removes heads and FFN
        neurons and leaves it whole."""
        qkv = set(self.pruning_num_heads())
        width = self.hidden_size
        return [m for m in self.modules() if isinstance(m, nn.Linear) and m.out_features == width and m not in qkv]

    def sync_after_pruning(self) -> None:
        """Head counts follow the pruned query width (head size is fixed)."""
        for a in self.attentions():
            a.all_head_size = int(a.query.out_features)
            a.num_attention_heads = a.all_head_size // int(a.attention_head_size)

    def heads(self) -> list[int]:
        return [int(a.num_attention_heads) for a in self.attentions()]


def _inputs(ids: torch.Tensor, mask: torch.Tensor, token_types: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Keyword inputs for a library forward (some models, e.g. DistilBERT, take no token types)."""
    out = {"input_ids": ids, "attention_mask": mask}
    return {**out, "token_type_ids": token_types} if token_types is not None else out


def is_bert_style(backbone: nn.Module) -> bool:
    enc = getattr(backbone, "encoder", None)
    return hasattr(backbone, "embeddings") and isinstance(getattr(enc, "layer", None), nn.ModuleList)


def _is_attention(m: nn.Module) -> bool:
    return all(isinstance(getattr(m, p, None), nn.Linear) for p in ("query", "key", "value")) and hasattr(
        m, "num_attention_heads") and hasattr(m, "attention_head_size")


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    if how == "cls":
        return hidden[:, 0]
    m = mask[..., None].to(hidden.dtype)
    if how == "max":
        return (hidden + (1.0 - m) * torch.finfo(hidden.dtype).min).amax(dim=1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


# --- building ------------------------------------------------------------------------------------

def _backbone_from_config(config: dict, classifier: bool) -> nn.Module:
    require_transformers("an hf: model")
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    cfg = dict(config)
    kind = cfg.pop("model_type", None)
    if not kind:
        raise ConfigError("model: the Hugging Face config has no model_type")
    if cfg.get("auto_map"):
        raise ConfigError(f"model: config maps to custom code ({kind}); frugalml never runs remote code")
    try:
        hf_cfg = AutoConfig.for_model(kind, **cfg)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"model: transformers cannot build a {kind!r} config ({str(e).splitlines()[0]})") from None
    auto = AutoModelForSequenceClassification if classifier else AutoModel
    try:
        backbone = auto.from_config(hf_cfg, attn_implementation="eager")
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"model: transformers has no {kind!r} model here ({str(e).splitlines()[0]})") from None
    if not classifier and getattr(backbone, "pooler", None) is not None:
        backbone.pooler = None  # a sentence embedding pools the token states itself; the pooler is dead weight
    return backbone.eval()


def from_config(config: dict, pooling: str = "mean", normalize: bool = False) -> HFEncoder:
    """The architecture `config` describes, untrained (an artifact's weights are loaded into it)."""
    return HFEncoder(_backbone_from_config(config, pooling == "logits"), pooling, normalize).eval()


def load_weights(model: HFEncoder, folder: Path) -> None:
    """The folder's safetensors weights into `model` (prefixes such as `bert.` mapped); pickled
    checkpoints (pytorch_model.bin) are refused."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickled = [p.name for p in folder.glob("*.bin")]
        why = f" (only {', '.join(pickled)}: pickle, which frugalml never loads)" if pickled else ""
        raise ConfigError(f"model: {folder} has no .safetensors weights{why}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    backbone = model.backbone
    want = backbone.state_dict()
    prefix = getattr(backbone, "base_model_prefix", "")
    mapped = {}
    for k, v in state.items():
        key = k if k in want else k.removeprefix(prefix + ".") if k.startswith(prefix + ".") else k
        if key not in want and prefix and f"{prefix}.{k}" in want:
            key = f"{prefix}.{k}"
        if key in want:
            mapped[key] = v
    missing = [k for k in want if k not in mapped and not k.endswith(("position_ids", "token_type_ids"))]
    if missing:
        raise ConfigError(f"model: {folder} lacks weights for {len(missing)} tensors (e.g. {missing[:3]})")
    backbone.load_state_dict(mapped, strict=False)


def load_pretrained(name: str, pooling: str | None = None, normalize: bool | None = None) -> HFEncoder:
    """`hf:DIR` / `hf:package` with its pretrained weights and sentence-transformers pooling."""
    folder = resolve(name)
    config = read_config(folder)
    default_pool, default_norm = pooling_of(folder, config)
    model = from_config(config, pooling or default_pool, default_norm if normalize is None else normalize)
    load_weights(model, folder)
    return model.eval()


def drop_layers(model: HFEncoder, keep: list[int]) -> HFEncoder:
    """Keep only the encoder layers `keep` (in that order), in place; the config follows."""
    if not is_bert_style(model.backbone):
        raise ConfigError("distill.layers: layer dropping needs a BERT-style encoder (embeddings + encoder.layer)")
    layers = model.backbone.encoder.layer
    bad = [i for i in keep if not 0 <= i < len(layers)]
    if bad or not keep or len(set(keep)) != len(keep):
        raise ConfigError(f"distill.layers: {keep} must be distinct layer indices in 0..{len(layers) - 1}")
    model.backbone.encoder.layer = nn.ModuleList([layers[i] for i in keep])
    model.backbone.config.num_hidden_layers = len(keep)
    return model
