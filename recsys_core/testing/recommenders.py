"""The conformance suite every recommender passes, and the tiny data it runs on.

Run it for every registered model (as the project's tests do) or for one of your own:

    import pytest
    from recsys_core.testing.recommenders import RecommenderContract

    class TestMyModel(RecommenderContract):
        @pytest.fixture
        def name(self):
            return "my-model"

Each check reads the model's declared `capabilities`: a check that does not apply to a model
(factors of a model without them, text of a model that reads none) is an explicit
`pytest.skip` naming the capability, so pytest counts it, and the declaration itself is
checked (a model that declares no factors must not return any). Tests fit with the model's
`test_profile` (`quick`; plus `learns` where the planted structure must be learned) on the
`device` fixture: cuda when one is present and the model trains there, else cpu.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from recsys_core.data.interactions import Interactions, UserHistories
from recsys_core.errors import InputError
from recsys_core.models import FitOptions, Recommender, TrainingData, create, registered
from recsys_core.ranking import top_k
from recsys_core.registry.artifacts import ModelBundle, load_bundle, save_bundle


def test_device() -> str:
    """Where the torch models are tested: cuda when this machine has one, else cpu."""
    return "cuda" if torch.cuda.is_available() else "cpu"


test_device.__test__ = False  # a helper, not a test


def events_frame(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    """An events table from (user_id, item_id, unix seconds) rows, each event worth 1."""
    return pl.DataFrame(
        rows, schema={"user_id": pl.String, "item_id": pl.String, "timestamp": pl.Int64},
        orient="row",
    ).with_columns(
        pl.from_epoch("timestamp", time_unit="s").dt.replace_time_zone("UTC"), value=pl.lit(1.0)
    )  # fmt: skip


def planted_interactions(n_groups: int = 4, per_group: int = 5, users_per_group: int = 6):
    """Checkerboard: users of group g saw every item of group g except one (item g*per_group).

    Returns the interactions and, per user, the planted item its top recommendation must be.
    """
    rows, expected = [], {}
    t = 1_000_000
    for g in range(n_groups):
        items = [g * per_group + j for j in range(per_group)]
        for u in range(users_per_group):
            user = f"u{g}-{u}"
            expected[user] = f"i{items[0]:03d}"
            for item in items[1:]:
                t += 60
                rows.append((user, f"i{item:03d}", t))
    # the held-out item of each group is seen by one extra user, so it has some signal
    for g in range(n_groups):
        for item in range(g * per_group, (g + 1) * per_group):
            t += 60
            rows.append((f"w{g}", f"i{item:03d}", t))
    catalog = pl.Series([f"i{i:03d}" for i in range(n_groups * per_group)])
    return Interactions.from_events(events_frame(rows), catalog), expected


def group_embeddings(data: Interactions, n_groups: int = 4, per_group: int = 5) -> torch.Tensor:
    """Text vectors that share a direction within a group (what a good encoder would give)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(n_groups, 16))
    ids = data.items.ids.to_list()
    rows = [centers[int(i[1:]) // per_group] + 0.1 * rng.normal(size=16) for i in ids]
    return torch.nn.functional.normalize(torch.tensor(np.array(rows), dtype=torch.float32), dim=1)


def chain_interactions(n_groups: int = 4, per_group: int = 5, users_per_group: int = 8):
    """Ordered chains: a user of group g meets a few noise items, then the first 2..5 items
    of chain g in order (i{g*5}, i{g*5+1}, ...). Text vectors share a direction per group.

    Returns the interactions and the text vectors.
    """
    rng = np.random.default_rng(0)
    rows, t = [], 1_000_000
    for g in range(n_groups):
        for u in range(users_per_group):
            noise = [f"n{p}" for p in rng.choice(4, size=rng.integers(0, 5), replace=False)]
            chain = [f"i{g * per_group + j:03d}" for j in range(2 + u % (per_group - 1))]
            for item in noise + chain:
                t += 60
                rows.append((f"u{g}-{u}", item, t))
    data = Interactions.from_events(events_frame(rows))
    centers = rng.normal(size=(n_groups + 1, 16))
    group = [int(i[1:]) // per_group if i[0] == "i" else n_groups for i in data.items.ids]
    vectors = centers[group] + 0.1 * rng.normal(size=(data.n_items, 16))
    return data, torch.nn.functional.normalize(torch.tensor(vectors, dtype=torch.float32), dim=1)


def history_of(data: Interactions, item_ids: list[str]) -> UserHistories:
    """The history of a user unknown to any model who met `item_ids` in this order."""
    items = data.items.index(item_ids).copy()
    return UserHistories(
        np.array([-1]), np.array([0, len(items)]), items, np.arange(len(items)), data.n_items
    )


def fit_for_test(
    name: str,
    data: Interactions,
    *,
    learns: bool = False,
    text: bool = False,
    embeddings: torch.Tensor | None = None,
    device: str = "cpu",
    **params,
) -> Recommender:
    """Fit model `name` with its test profile (plus `params`) on `data`.

    Args:
        learns: Add the profile's `learns` parameters (the planted structure must be learned).
        text: Add the profile's `text` parameters (turn on an optional text path).
        embeddings: Item text vectors; group vectors of the planted data when the model reads
            text and none are given.
        device: Where a model that trains on devices trains (others train on cpu).
    """
    profile = registered()[name].test_profile
    chosen = {**profile.quick, **(profile.learns if learns else {})}
    chosen = {**chosen, **(profile.text if text else {}), **params}
    model = create(name, chosen)
    if model.uses_text and embeddings is None:
        embeddings = group_embeddings(data)
    on = device if device.split(":")[0] in model.capabilities.devices else "cpu"
    embeddings = embeddings if model.uses_text else None
    model.fit(TrainingData(data, embeddings), FitOptions(seed=0, device=on))
    return model


class RecommenderContract:
    """What every model guarantees. Subclasses provide the `name` fixture (a model name)."""

    @pytest.fixture
    def planted(self):
        return planted_interactions()

    @pytest.fixture
    def device(self) -> str:
        return test_device()

    @pytest.fixture
    def capabilities(self, name):
        return registered()[name].capabilities

    # -- every model ----------------------------------------------------------------------
    def test_scores_have_one_row_per_user_and_one_column_per_item(self, name, planted, device):
        data, _ = planted
        scores = fit_for_test(name, data, device=device).score(data.histories(np.arange(5)))
        assert scores.shape == (5, data.n_items)
        assert scores.dtype == torch.float32 and scores.device.type == "cpu"
        assert torch.isfinite(scores).all()

    def test_scores_made_in_a_reused_buffer_are_the_scores(self, name, planted):
        data, _ = planted
        model = fit_for_test(name, data)
        histories = data.histories()
        out = torch.full((len(histories), data.n_items), float("nan"))  # an earlier chunk's
        model.score_into(histories, out)
        assert torch.equal(out, model.score(histories))

    def test_state_round_trip_scores_identically(self, name, planted, tmp_path):
        data, _ = planted
        model = fit_for_test(name, data)
        loaded = load_bundle(save_bundle(ModelBundle.from_fit(model, data), tmp_path / "bundle"))
        histories = data.histories()
        assert loaded.items == data.items and loaded.users == data.users
        torch.testing.assert_close(loaded.model.score(histories), model.score(histories))
        assert loaded.model.params() == model.params()

    def test_fit_is_deterministic(self, name, planted, device):
        data, _ = planted
        h = data.histories()
        first = fit_for_test(name, data, device=device).score(h)
        torch.testing.assert_close(fit_for_test(name, data, device=device).score(h), first)

    def test_users_unknown_to_the_model_are_scored_from_their_history(self, name, planted):
        data, _ = planted
        model = fit_for_test(name, data)
        known = data.histories(np.arange(3))
        unknown = UserHistories(
            user_index=np.full(3, -1), indptr=known.indptr, items=known.items,
            timestamps=known.timestamps, n_items=known.n_items,
        )  # fmt: skip
        scores = model.score(unknown)
        assert scores.shape == (3, data.n_items) and torch.isfinite(scores).all()

    # -- declared capabilities ------------------------------------------------------------
    def test_factors_multiply_to_the_scores(self, name, planted, capabilities):
        data, _ = planted
        model = fit_for_test(name, data)
        histories = data.histories(np.arange(6))
        found = model.factors(histories)
        if not capabilities.has_factors:
            assert found is None, f"{name} returns factors but does not declare has_factors"
            pytest.skip(f"{name} declares no factors")
        assert found is not None, f"{name} declares has_factors but returns none"
        users, items = found
        assert users.shape == (6, items.shape[1]) and items.shape[0] == data.n_items
        torch.testing.assert_close(users @ items.T, model.score(histories), rtol=1e-4, atol=1e-4)

    def test_reasons_come_from_the_users_history(self, name, planted, capabilities):
        data, expected = planted
        model = fit_for_test(name, data, learns=True)
        histories = data.histories(data.users.index(list(expected)))  # the group users
        ranked = top_k(model, histories, 3, explain=True)
        if not capabilities.explains:
            assert (ranked.reasons == -1).all(), f"{name} gives reasons but declares none"
            pytest.skip(f"{name} declares no explanations")
        for row in range(len(histories)):
            # each user's best recommendation (a planted item, backed by the user's group) has
            # a reason; every reason given is an item of the user's history
            assert ranked.reasons[row, 0] >= 0, f"user row {row}: no reason for the top item"
            given = ranked.reasons[row][ranked.reasons[row] >= 0]
            assert set(given.tolist()) <= set(histories.row(row).tolist())

    def test_reasons_do_not_depend_on_the_users_ranked_alongside(self, name, planted, capabilities):
        if not capabilities.explains:
            pytest.skip(f"{name} declares no explanations")
        data, _ = planted
        model = fit_for_test(name, data, learns=True)
        # histories cut to different lengths: ranked together, the shorter ones are padded
        # to the longest; ranked alone (another chunk size, shard or `recsys recs`), not
        full = data.histories()
        rows = [full.row(u)[: max(1, len(full.row(u)) - 2 * (u % 3))] for u in range(len(full))]
        cut = UserHistories(
            user_index=full.user_index, indptr=np.cumsum([0, *map(len, rows)]),
            items=np.concatenate(rows), timestamps=np.arange(sum(map(len, rows))),
            n_items=full.n_items,
        )  # fmt: skip
        together = top_k(model, cut, 5, explain=True)
        for u in range(len(cut)):
            alone = top_k(model, cut.slice(u, u + 1), 5, explain=True)
            assert alone.items[0].tolist() == together.items[u].tolist(), f"user row {u}"
            assert alone.reasons[0].tolist() == together.reasons[u].tolist(), f"user row {u}"

    def test_scores_differ_between_users(self, name, planted, capabilities):
        data, _ = planted
        scores = fit_for_test(name, data).score(data.histories())
        differ = not torch.allclose(scores, scores[:1].expand_as(scores))
        if not capabilities.personalized:
            assert not differ, f"{name} scores users apart but declares personalized=False"
            pytest.skip(f"{name} is not personalized")
        assert differ

    def test_planted_item_is_each_users_top_recommendation(self, name, planted, capabilities):
        if not capabilities.personalized or capabilities.sequential:
            pytest.skip(f"{name}: planted sets are for personalized, order-free models")
        data, expected = planted
        model = fit_for_test(name, data, learns=True)
        users = list(expected)
        ranked = top_k(model, data.histories(data.users.index(users)), 1)
        assert data.items.lookup(ranked.items[:, 0]).to_list() == [expected[u] for u in users]

    def test_sequential_models_continue_the_chain_and_explain_from_it(self, name, capabilities):
        if not capabilities.sequential:
            pytest.skip(f"{name} is not sequential")
        data, text = chain_interactions()
        model = fit_for_test(name, data, learns=True, embeddings=text)
        for g in range(4):
            for cut in range(1, 4):
                chain = [f"i{g * 5 + j:03d}" for j in range(cut)]
                ranked = top_k(model, history_of(data, ["n1", *chain]), 1, explain=True)
                assert data.items.lookup(ranked.items[0]).to_list() == [f"i{g * 5 + cut:03d}"]
                # the reason is a chain item, not the unrelated noise item
                assert data.items.lookup(ranked.reasons[0]).to_list()[0] in chain

    def test_sequential_models_read_the_order(self, name, capabilities):
        if not capabilities.sequential:
            pytest.skip(f"{name} is not sequential")
        data, text = chain_interactions()
        model = fit_for_test(name, data, learns=True, embeddings=text)
        forward = model.score(history_of(data, ["i000", "i001", "i002"]))
        backward = model.score(history_of(data, ["i002", "i001", "i000"]))
        assert not torch.allclose(forward, backward)

    def test_text_models_rank_an_item_without_events_by_its_text(self, name, capabilities):
        if not capabilities.uses_text:
            pytest.skip(f"{name} reads no text")
        data, text = chain_interactions()
        cold = int(data.items.index(["i003"])[0])  # chain 0's fourth item loses every event
        warm = data.with_frame(data.frame.filter(pl.col("item_index") != cold))
        model = fit_for_test(name, warm, learns=True, text=True, embeddings=text)
        assert model.uses_text
        scores = model.score(history_of(warm, ["i000", "i001", "i002"]))[0]
        other_chains = [int(i) for i in data.items.index([f"i{j:03d}" for j in range(5, 20)])]
        # its text puts it with chain 0: above every item of the other chains
        assert scores[cold] > scores[other_chains].max()

    def test_text_models_refuse_to_fit_without_embeddings(self, name, planted, capabilities):
        if not capabilities.uses_text:
            pytest.skip(f"{name} reads no text")
        data, _ = planted
        profile = registered()[name].test_profile
        model = create(name, {**profile.quick, **profile.text})
        assert model.uses_text
        with pytest.raises(InputError, match="embeddings"):
            model.fit(TrainingData(data, None), FitOptions(seed=0))

    def test_torch_models_train_on_the_device(self, name, planted, device, capabilities):
        if "cuda" not in capabilities.devices:
            pytest.skip(f"{name} trains on {', '.join(capabilities.devices)} only")
        data, _ = planted
        profile = registered()[name].test_profile
        model = create(name, {**profile.quick, **profile.learns})
        embeddings = group_embeddings(data) if model.uses_text else None
        epochs = model.fit(TrainingData(data, embeddings), FitOptions(seed=0, device=device))
        assert len(epochs) == model.config.epochs and epochs[-1]["loss"] < epochs[0]["loss"]
        scores = model.score(data.histories())  # scoring state is on the cpu
        assert scores.device.type == "cpu" and torch.isfinite(scores).all()
