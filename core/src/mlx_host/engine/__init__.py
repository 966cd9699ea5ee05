"""MLX execution: the only package of mlx-host that imports mlx.

Importing it prepares the process first (``mlx_host.runtime``: the BLAS, the allocator), so
nothing may import mlx before it.
"""

from mlx_host import runtime

BLAS = runtime.prepare()
