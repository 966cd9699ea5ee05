"""MLX execution: the only package of mlx-host that imports mlx.

Importing it prepares the process before MLX loads: an optimized BLAS (see ``blas``) and an
allocator that returns freed memory (see ``libc``). So nothing may import mlx before it.
"""

from mlx_host.engine import libc
from mlx_host.engine.blas import load_blas
from mlx_host.settings import get_settings

libc.return_large_blocks_on_free()
BLAS = load_blas(get_settings().blas)
