"""The parameter digest: exact, position-aware, every dtype.

Identical parameters giving identical digests in different processes: tests/agents/trainer/
test_ddp.py (two DDP replicas compare digests at every step).
"""

import pytest
import torch

from trainguard.agents.trainer.checksum import (
    COLUMNS,
    ParamChecksum,
    column_weight,
    reference_digest,
    row_weight,
    to_hex,
)


def digest(*tensors):
    return int(ParamChecksum(tensors).digest().item())


def words(t):
    flat = t.reshape(-1)
    if (flat.numel() * flat.element_size()) % 4 == 0:
        return flat.view(torch.int32).tolist()
    wide = torch.int16 if flat.element_size() == 2 else torch.uint8
    return flat.view(wide).to(torch.int32).tolist()


def test_weights_are_2p_plus_1_mod_2_pow_33():
    for r in (0, 1, 5, 1000):
        for c in (0, 1, 7, COLUMNS - 1):
            w = column_weight(c) + row_weight(r)
            assert w % 2**33 == (2 * (r * COLUMNS + c) + 1) % 2**33


@pytest.mark.parametrize("use_numpy", [True, False], ids=["numpy", "torch"])
@pytest.mark.parametrize("n", [5, COLUMNS, 3 * COLUMNS + 17])
def test_the_digest_equals_the_pure_python_specification(n, use_numpy):
    g = torch.Generator().manual_seed(n)
    t = torch.randn(n, generator=g)
    ck = ParamChecksum([t])
    ck.use_numpy = use_numpy
    assert int(ck.digest().item()) % 2**64 == reference_digest([words(t)], ck.signature)


@pytest.mark.parametrize("use_numpy", [True, False], ids=["numpy", "torch"])
def test_small_tensors_form_one_chunk_after_the_large_ones_and_match_the_specification(use_numpy):
    g = torch.Generator().manual_seed(1)
    ts = [torch.randn(s, generator=g) for s in (3, 10, 2 * COLUMNS + 1, 4, 1)]
    ts.append(torch.randn(5, generator=g).to(torch.bfloat16))  # widened 16-bit words
    ck = ParamChecksum(ts)
    ck.use_numpy = use_numpy
    # tensors of a row or more first, then the small ones concatenated, in order
    chunks = [words(ts[2]), words(ts[0]) + words(ts[1]) + words(ts[3]) + words(ts[4])
              + words(ts[5])]
    assert int(ck.digest().item()) % 2**64 == reference_digest(chunks, ck.signature)


@pytest.mark.parametrize("dtype,n", [
    (torch.float32, 40), (torch.bfloat16, 33), (torch.float16, 34), (torch.float64, 9),
    (torch.int8, 13), (torch.uint8, 16),
])
def test_every_single_bit_flip_changes_the_digest(dtype, n):
    g = torch.Generator().manual_seed(7)
    t = (torch.randn(n, generator=g) * 50).to(dtype)
    ck = ParamChecksum([t])
    base = int(ck.digest().item())
    raw = t.view(torch.uint8)
    seen = {base}
    for byte in range(raw.numel()):
        for bit in range(8):
            raw[byte] ^= 1 << bit
            seen.add(int(ck.digest().item()))
            raw[byte] ^= 1 << bit
    assert len(seen) == raw.numel() * 8 + 1  # every flip moves it, and to distinct values
    assert int(ck.digest().item()) == base


def test_bool_tensors_are_covered():
    t = torch.tensor([True, False, True])
    before = digest(t)
    t[1] = True
    assert digest(t) != before


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_swapping_two_elements_changes_the_digest(dtype):
    t = torch.randn(2 * COLUMNS + 40, generator=torch.Generator().manual_seed(2)).to(dtype)
    before = digest(t)
    for i, j in [(0, 1), (3, 2 * COLUMNS + 5), (COLUMNS - 1, COLUMNS), (10, 30)]:
        assert t[i] != t[j]
        s = t.clone()
        s[i], s[j] = t[j].clone(), t[i].clone()
        assert digest(s) != before, (i, j)


def test_plus_d_minus_d_on_two_elements_changes_the_digest():
    t = torch.zeros(3 * COLUMNS, dtype=torch.int32)
    before = digest(t)
    for i, j, d in [(0, 1, 1), (5, 2 * COLUMNS + 5, 2**30), (7, 9, -(2**31)), (0, COLUMNS, 3)]:
        s = t.clone()
        s[i] += d
        s[j] -= d
        assert digest(s) != before, (i, j, d)
    # a plain sum would not see it
    s = t.clone()
    s[0] += 5
    s[1] -= 5
    assert int(s.sum()) == int(t.sum())


def test_swapping_two_equal_shape_tensors_changes_the_digest():
    a, b = torch.randn(50), torch.randn(50)
    assert digest(a, b) != digest(b, a)


def test_replacing_param_data_in_place_is_seen():
    model = torch.nn.Linear(8, 4)
    ck = ParamChecksum(model.parameters())
    before = ck.hexdigest()
    with torch.no_grad():
        model.weight[2, 3] += 1e-6
    assert ck.hexdigest() != before
    assert len(before) == 16 and int(before, 16) >= 0


def test_to_hex_is_sixteen_digits_for_negative_int64():
    assert to_hex(-1) == "f" * 16
    assert to_hex(5) == "0000000000000005"


def test_a_non_contiguous_parameter_is_hashed_by_its_values():
    base = torch.randn(6, 8)
    transposed = base.t()  # non-contiguous view
    assert digest(transposed) == digest(transposed.contiguous())


def test_no_parameters_gives_the_empty_signature():
    assert ParamChecksum([]).hexdigest() == ParamChecksum([torch.empty(0)]).hexdigest()


def test_large_tensors_reduced_block_by_block_match_the_specification(monkeypatch):
    from trainguard.agents.trainer import checksum

    monkeypatch.setattr(checksum, "_BLOCK_WORDS", 2 * COLUMNS)
    t = torch.randn(7 * COLUMNS + 3, generator=torch.Generator().manual_seed(9))
    ck = ParamChecksum([t])
    ck.use_numpy = False
    assert int(ck.digest().item()) % 2**64 == reference_digest([words(t)], ck.signature)


def test_the_cpu_views_kept_between_digests_follow_in_place_and_replaced_data():
    model = torch.nn.Sequential(torch.nn.Linear(40, 30), torch.nn.Linear(30, 3))
    cached, fresh = ParamChecksum(model.parameters()), ParamChecksum
    assert cached.use_numpy
    before = cached.hexdigest()
    with torch.no_grad():
        model[1].bias[2] += 1.0  # a small tensor, in the concatenated chunk
    after_in_place = cached.hexdigest()
    assert after_in_place != before
    assert after_in_place == fresh(model.parameters()).hexdigest()
    model[0].weight.data = model[0].weight.data.clone() * 2  # new storage
    assert cached.hexdigest() == fresh(model.parameters()).hexdigest() != after_in_place
