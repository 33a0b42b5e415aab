"""How a simulated shop names its users and items in the logs it writes.

Inside the simulator users and items are indices ``0..n-1`` (the ground truth is arrays).
A real shop's logs carry its own strings (``u00042``, ``sku-00017``), so a world has an
:class:`IdNaming`: templates that turn an index into the id its logs, catalog and traffic
use, and back. ``plain`` writes the index as decimal text (``"42"``; string order is not
numeric order: ``"10" < "9"``), as the simulator always did; ``shop`` writes prefixed,
zero-padded ids like a shop's own (``u000042``, ``sku-00017``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Final

import numpy as np
import pyarrow as pa


class NamingError(ValueError):
    """An id that this naming did not produce, or a bad template."""


@dataclass(frozen=True)
class IdNaming:
    """Templates (``str.format`` with one integer field) for user and item ids."""

    user: str = "{}"
    item: str = "{}"
    n_users: int = field(default=0, compare=False)
    n_items: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        for name, template in (("user", self.user), ("item", self.item)):
            try:
                first, second = template.format(1), template.format(2)
            except (IndexError, KeyError, ValueError) as exc:
                raise NamingError(f"{name} template {template!r} is invalid: {exc}") from None
            if first == second:
                raise NamingError(f"{name} template {template!r} must contain the index")

    def sized(self, n_users: int, n_items: int) -> IdNaming:
        """This naming for a world of ``n_users`` x ``n_items``."""
        return IdNaming(self.user, self.item, n_users, n_items)

    def params(self) -> dict[str, str]:
        return {"user": self.user, "item": self.item}

    @cached_property
    def _user_names(self) -> pa.Array:
        return pa.array([self.user.format(i) for i in range(self.n_users)], pa.string())

    @cached_property
    def _item_names(self) -> pa.Array:
        return pa.array([self.item.format(i) for i in range(self.n_items)], pa.string())

    @cached_property
    def _user_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self._user_names.to_pylist())}

    @cached_property
    def _item_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self._item_names.to_pylist())}

    def user_ids(self, users: np.ndarray | Sequence[int]) -> pa.Array:
        """The ids of user indices, as an Arrow string array."""
        return self._user_names.take(pa.array(np.asarray(users, dtype=np.int64)))

    def item_ids(self, items: np.ndarray | Sequence[int]) -> pa.Array:
        """The ids of item indices, as an Arrow string array."""
        return self._item_names.take(pa.array(np.asarray(items, dtype=np.int64)))

    def user_id(self, user: int) -> str:
        return self.user.format(int(user))

    def item_id(self, item: int) -> str:
        return self.item.format(int(item))

    def user_index(self, user_id: str) -> int:
        """The index of a user id this naming produced; :class:`NamingError` otherwise."""
        return _lookup(self._user_index, user_id, "user")

    def item_indices(self, item_ids: Iterable[str]) -> list[int]:
        """The indices of item ids this naming produced; :class:`NamingError` otherwise."""
        return [_lookup(self._item_index, str(i), "item") for i in item_ids]


def _lookup(index: dict[str, int], value: str, what: str) -> int:
    try:
        return index[value]
    except KeyError:
        raise NamingError(f"{what} id {value!r} is not one of this world's ids") from None


#: Decimal text of the index: the simulator's ids before it named them.
PLAIN: Final = IdNaming()
#: Shop-like ids: ``u000042`` users and ``sku-00017`` items.
SHOP: Final = IdNaming(user="u{:06d}", item="sku-{:05d}")
#: Named presets (``flywheel simulate --ids NAME``).
NAMINGS: Final[dict[str, IdNaming]] = {"plain": PLAIN, "shop": SHOP}
