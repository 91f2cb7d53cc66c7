"""Synthetic sets: deterministic, sized for fast tests, and the planted effect is where it should be."""

from collections import Counter

import pytest

from fixtures import FixtureError, available_sets, load_fixture_set, synthetic_fixture_set


def _letter_freqs(docs) -> Counter:
    c = Counter(ch for d in docs for ch in d.text.lower() if ch.isalpha())
    total = sum(c.values())
    return Counter({k: v / total for k, v in c.items()})


def test_available_sets_lists_the_builtins():
    assert {"classics", "null", "synthetic", "synthetic-null"} <= set(available_sets())


def test_same_arguments_same_bytes_and_other_seed_other_bytes():
    a = synthetic_fixture_set(3, distance=1.0, signal=0.5, seed=7)
    b = synthetic_fixture_set(3, distance=1.0, signal=0.5, seed=7)
    c = synthetic_fixture_set(3, distance=1.0, signal=0.5, seed=8)
    assert a == b and a.sha256() == b.sha256()
    assert a.sha256() != c.sha256()


def test_sizes_are_small_and_heldout_resamplable():
    fs = load_fixture_set("synthetic")
    assert [u.name for u in fs.users] == ["user1", "user2", "user3"]
    for u in fs.users:
        assert 20_000 <= u.train_bytes <= 40_000
        assert len(u.heldout) >= 40
        assert all(300 <= d.n_bytes <= 600 for d in u.heldout)
        assert not {d.text for d in u.train} & {d.text for d in u.heldout}
        assert len({d.doc_id for d in u.heldout}) == len(u.heldout)
    assert 200_000 <= sum(d.n_bytes for d in fs.pretrain) <= 400_000
    assert fs.leakage and all(n < 100 for _, _, n in fs.leakage)


def test_planted_signal_shifts_each_users_letters_and_null_does_not():
    def own_letter_excess(fs):  # user1 owns "bdgk": their frequency vs the other users'
        f = [_letter_freqs(u.train) for u in fs.users]
        own = sum(f[0][ch] for ch in "bdgk")
        other = sum(f[1][ch] for ch in "bdgk")
        return own - other

    assert own_letter_excess(load_fixture_set("synthetic")) > 0.10
    assert abs(own_letter_excess(load_fixture_set("synthetic-null"))) < 0.02
    # distance = 0: every user is shifted, but the same way: no personal excess
    assert abs(own_letter_excess(synthetic_fixture_set(3, distance=0.0, signal=0.8, seed=0))) < 0.02


def test_signal_zero_users_draw_from_the_pretraining_distribution():
    fs = synthetic_fixture_set(3, distance=1.0, signal=0.0, seed=0)
    pre, user = _letter_freqs(fs.pretrain), _letter_freqs(fs.users[0].train)
    assert max(abs(pre[ch] - user[ch]) for ch in pre) < 0.02


@pytest.mark.parametrize("kwargs, match", [
    (dict(signal=1.5), "`signal`"),
    (dict(distance=-0.1), "`distance`"),
    (dict(n_users=0), "`n_users`"),
    (dict(heldout_doc_bytes=(50, 40)), "`heldout_doc_bytes`"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    args = dict(n_users=3, distance=1.0, signal=0.5, seed=0) | kwargs
    with pytest.raises(FixtureError, match=match):
        synthetic_fixture_set(args.pop("n_users"), **args)


def test_take_first_n_users():
    fs = load_fixture_set("synthetic")
    assert [u.name for u in fs.take(2).users] == ["user1", "user2"]
    with pytest.raises(FixtureError, match="`--fixtures 4`"):
        fs.take(4)
