"""Registers the `fork` service: code generation."""

from collections.abc import Callable

from mlx_host import ServicePolicy, ServiceSpec, hookimpl

SERVICE = ServiceSpec(
    name="fork",
    key_prefix="fork_",
    chat_model="deepseek-coder",
    completion_model="deepseek-coder",
    description="Code generation",
    policy=ServicePolicy(
        system_prompt=(
            "You are Fork, a coding assistant. Answer with correct, minimal code in fenced "
            "blocks and a short explanation."
        ),
        # Code wants the likeliest tokens; a completion (or a middle filled in with suffix)
        # ends at two blank lines in a row, where the next unit of code would start.
        temperature=0.1,
        completion_stop=("\n\n\n",),
        max_tokens=1024,
        max_tokens_cap=4096,
        allowed_models=("qwen3-14b", "smollm2-135m-instruct"),
    ),
)


@hookimpl
def mlx_host_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """The `fork` service, for keys starting with `fork_`."""
    register(SERVICE)
