"""Models by name: `build_model("transformer", {...}, input_dim=..., num_gloss=..., num_cat=...)`.

Each model module registers itself on import; adding a model is one module plus one import here.
"""

from __future__ import annotations

from signray.models import base, iv3_gru, registry, transformer
from signray.models.base import *  # noqa: F403  (the package's API is its modules')
from signray.models.iv3_gru import *  # noqa: F403  (imported: the model registers itself)
from signray.models.registry import *  # noqa: F403
from signray.models.transformer import *  # noqa: F403  (imported: the model registers itself)

__all__ = [*base.__all__, *registry.__all__, *iv3_gru.__all__, *transformer.__all__]
