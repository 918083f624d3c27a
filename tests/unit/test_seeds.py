"""Seeds derived by purpose: deterministic, distinct per purpose, and no literal offsets."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import medveil
from medveil.seeds import derive_seed, numpy_rng, seeded

PURPOSE = st.text(min_size=1, max_size=30)


@given(seed=st.integers(0, 2**31), a=PURPOSE, b=PURPOSE)
def test_a_seed_is_a_function_of_seed_and_purpose_only(seed, a, b):
    assert derive_seed(seed, a) == derive_seed(seed, a)
    assert 0 <= derive_seed(seed, a) < 2**63
    if a != b:
        assert derive_seed(seed, a) != derive_seed(seed, b)
    assert derive_seed(seed, a) != derive_seed(seed + 1, a)


def test_a_purpose_is_required():
    with pytest.raises(ValueError, match="purpose"):
        derive_seed(0, "")


def test_seeded_is_reproducible_and_leaves_the_callers_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    with seeded(0, "tests/a") as gen:
        first = (torch.rand(3), torch.rand(3, generator=gen))
    assert torch.equal(torch.random.get_rng_state(), before)
    with seeded(0, "tests/a") as gen:
        again = (torch.rand(3), torch.rand(3, generator=gen))
    with seeded(0, "tests/b") as gen:
        other = torch.rand(3, generator=gen)
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not torch.equal(first[1], other) and not torch.equal(first[0], first[1])
    assert (numpy_rng(0, "x").random(3) == numpy_rng(0, "x").random(3)).all()


def _offsets(tree: ast.AST) -> list[int]:
    """Lines that add or subtract a number to a name that holds a seed (``seed + 7``)."""
    def seedish(node: ast.AST) -> bool:
        name = node.id if isinstance(node, ast.Name) else \
            node.attr if isinstance(node, ast.Attribute) else ""
        return "seed" in name.lower()

    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub))
            and ((seedish(node.left) and isinstance(node.right, ast.Constant))
                 or (seedish(node.right) and isinstance(node.left, ast.Constant)))]


def test_no_literal_seed_offsets_in_the_package():
    root = Path(medveil.__file__).parent
    found = {str(p.relative_to(root)): lines for p in root.rglob("*.py")
             if (lines := _offsets(ast.parse(p.read_text(encoding="utf-8"))))}
    assert not found, f"seed + N offsets (derive a seed by purpose instead): {found}"
    assert _offsets(ast.parse("rng = default_rng(seed + 11)")) == [1]
