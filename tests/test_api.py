"""recsys_core.api: what the CLI commands that are not flows read and change."""

from __future__ import annotations

from recsys_core import api
from recsys_core.pipeline import recommend


def test_restore_makes_an_earlier_night_current_and_says_what_it_holds(trained_lake):
    context = trained_lake
    lake = context.lake
    recommend(context.with_settings(k=2))
    recommend(context.with_settings(k=3))
    versions = api.recommendation_versions(lake.root)
    assert [v["version"] for v in versions] == [1, 0]  # newest first

    restored = api.restore_recommendations(lake.root, 0)
    table = lake.read("recommendations")
    assert (restored.version, restored.new_version) == (0, 2)
    assert restored.rows == table.height == 2 * restored.users
    assert restored.users == table["user_id"].n_unique()
    assert restored.models == sorted(table["model"].unique().to_list())
    assert api.recommendation_versions(lake.root)[0]["version"] == 2


def test_user_recommendations_are_the_published_rows_with_titles(trained_lake):
    context = trained_lake
    lake = context.lake
    recommend(context)
    user = lake.read("recommendations")["user_id"][0]
    shown = api.user_recommendations(lake.root, user, k=3)
    assert shown["rank"].to_list() == [1, 2, 3]
    assert {"title", "reason_title"} <= set(shown.columns)


def test_a_data_directory_without_a_quarantine_has_nothing_set_aside(tmp_path):
    found = api.quarantined_rows(tmp_path / "lake")
    assert found.reasons == {} and found.rows == []
