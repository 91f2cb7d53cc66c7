"""The synthetic set at any `--fixtures N`: 12 and 50 users, the first users unchanged, the cap."""

import numpy as np
import pytest

from fixtures import LEAKAGE_MAX_BYTES, FixtureError, load_fixture_set, synthetic_fixture_set
from fixtures.synthetic import MAX_USERS, _user_consonants


def _letter_share(docs, letters):
    text = "".join(d.text for d in docs).lower()
    return sum(text.count(c) for c in letters) / max(1, sum(ch.isalpha() for ch in text))


@pytest.fixture(scope="module")
def fifty():
    return load_fixture_set("synthetic", n_users=50)


@pytest.mark.parametrize("n", [12, 50])
def test_n_users_generated_distinct_and_leak_free(n, fifty):
    fs = fifty if n == 50 else load_fixture_set("synthetic", n_users=n)
    assert [u.name for u in fs.users] == [f"user{i}" for i in range(1, n + 1)]
    assert len({u.sha256() for u in fs.users}) == n
    assert len(fs.leakage) == 2 * n and max(b for *_, b in fs.leakage) < LEAKAGE_MAX_BYTES
    assert fs.take(n).users == fs.users


def test_the_first_users_do_not_depend_on_n(fifty):
    three = load_fixture_set("synthetic")
    assert fifty.users[:3] == three.users and fifty.pretrain == three.pretrain
    assert load_fixture_set("synthetic", n_users=2).users == three.users  # at least 3 are generated, take() cuts


def test_every_user_has_its_own_letters_and_uses_them():
    sets = [frozenset(_user_consonants(i, seed=0)) for i in range(MAX_USERS)]
    assert len(set(sets)) == MAX_USERS and all(len(s) == 4 for s in sets)
    fs = synthetic_fixture_set(12, seed=0)
    own = np.array([[_letter_share(u.heldout, _user_consonants(j, 0)) for j in range(12)] for u in fs.users])
    # a user's held-out text uses its own letters more than any other user's letters
    assert all(own[i, i] > np.delete(own[i], i).max() for i in range(12))


def test_more_users_than_the_generator_has_is_refused():
    with pytest.raises(FixtureError, match=rf"`--fixtures {MAX_USERS + 1}`: fixture set 'synthetic' generates at most "
                                           rf"{MAX_USERS} users"):
        load_fixture_set("synthetic", n_users=MAX_USERS + 1)
    with pytest.raises(FixtureError, match="`n_users`"):
        synthetic_fixture_set(MAX_USERS + 1)
