"""mlx-host: a plugin-based, OpenAI-compatible inference server on Apple's MLX.

Plugin authors need only what is exported here.
"""

from mlx_host.errors import MLXHostError
from mlx_host.hookspecs import hookimpl
from mlx_host.models.spec import ModelSpec
from mlx_host.services import PromptPolicy, ServiceSpec

__all__ = ["MLXHostError", "ModelSpec", "PromptPolicy", "ServiceSpec", "hookimpl"]
