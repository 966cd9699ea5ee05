"""Every hook is documented (as datasette does): when it fires and what it returns."""

import inspect

from mlx_host import hookspecs


def test_every_hook_has_a_docstring_saying_when_it_is_called() -> None:
    hooks = [f for name, f in inspect.getmembers(hookspecs) if name.startswith("mlx_host_")]
    assert len(hooks) >= 2
    for hook in hooks:
        doc = inspect.getdoc(hook) or ""
        assert "Called" in doc and "returns" in doc, f"{hook.__name__} is not documented"
