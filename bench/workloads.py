"""The prompts the benchmarks send: the same for every server and engine they compare.

``write`` asks for new prose, whose tokens the prompt does not predict. ``edit`` asks for a
code edit, whose answer repeats most of its input: the case speculative decoding from the
prompt's own n-grams is for (docs/engine.md).
"""

from __future__ import annotations

from collections.abc import Callable

TOPICS = [
    "rivers", "owls", "bridges", "volcanoes", "bread", "chess", "comets", "forests",
    "trains", "honey", "glaciers", "violins", "deserts", "coral", "kites", "lighthouses",
]  # fmt: skip

# An explicit system message: the service adds none, so the engine sees the same tokens.
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}

CODE = """def order_total(items, tax_rate, coupons):
    subtotal = 0
    for item in items:
        subtotal += item.price * item.quantity
    discount = 0
    for coupon in coupons:
        if coupon.minimum <= subtotal:
            discount = max(discount, coupon.amount)
    taxed = (subtotal - discount) * (1 + tax_rate)
    return round(taxed, 2)
"""
RENAMES = [("items", "goods"), ("subtotal", "net"), ("discount", "saving"),
           ("coupon", "voucher"), ("taxed", "gross"), ("tax_rate", "vat")]  # fmt: skip


def write(i: int) -> list[dict]:
    """A request for a short paragraph on the ``i``-th topic."""
    return [SYSTEM, {"role": "user", "content": f"Write a short paragraph about {TOPICS[i % 16]}."}]


def edit(i: int) -> list[dict]:
    """A request to return ``CODE`` with the ``i``-th rename made."""
    old, new = RENAMES[i % len(RENAMES)]
    text = f"{CODE}\nRewrite this code with `{old}` renamed to `{new}`."
    return [SYSTEM, {"role": "user", "content": text}]


WORKLOADS: dict[str, Callable[[int], list[dict]]] = {"write": write, "edit": edit}
