"""MLX execution: the only package of mlx-host that imports mlx.

Importing it loads an optimized BLAS first (see ``blas``), so nothing may import mlx before it.
"""

from mlx_host.engine.blas import load_blas
from mlx_host.settings import get_settings

BLAS = load_blas(get_settings().blas)
