"""Models by name: `build_model("transformer", {...}, input_dim=..., num_gloss=..., num_cat=...)`.

Each model module registers itself on import; adding a model is one module plus one import here.
"""

from __future__ import annotations

from signray.models import iv3_gru, transformer  # noqa: F401  (imported to register the models)
from signray.models.base import ArchConfig, CheckpointMixin
from signray.models.iv3_gru import IV3GRU, IV3GRUConfig
from signray.models.registry import (
    ModelSpec,
    arch_fields,
    build_model,
    get_model_spec,
    list_models,
    make_arch,
    register_model,
)
from signray.models.transformer import SignTransformer, TransformerConfig

__all__ = [
    "IV3GRU",
    "ArchConfig",
    "CheckpointMixin",
    "IV3GRUConfig",
    "ModelSpec",
    "SignTransformer",
    "TransformerConfig",
    "arch_fields",
    "build_model",
    "get_model_spec",
    "list_models",
    "make_arch",
    "register_model",
]
