"""MLflow pyfunc served from code: loads the bundle's safetensors/JSON/Parquet, no pickle.

Input: a pandas frame with a `user_id` column. Params: `k` (default 20). Output: one row per
(user, rank) with `item_id`, `score` and `reason_item_id`, as in the recommendations table.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class RecsysPyfunc(PythonModel):
    def load_context(self, context) -> None:
        from recsys_core.registry.artifacts import load_bundle

        self.bundle = load_bundle(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        from recsys_core.ranking import top_k

        k = int((params or {}).get("k", 20))
        user_ids = [str(u) for u in model_input["user_id"].tolist()]
        histories, _ = self.bundle.histories_for(user_ids)
        ranked = top_k(self.bundle.model, histories, k, explain=True)
        rows, ranks = np.nonzero(ranked.items >= 0)
        items = self.bundle.items.lookup(ranked.items[rows, ranks]).to_list()
        reasons = self.bundle.items.lookup(ranked.reasons[rows, ranks]).to_list()
        return pd.DataFrame(
            {
                "user_id": [user_ids[r] for r in rows],
                "rank": (ranks + 1).astype("int32"),
                "item_id": items,
                "score": ranked.scores[rows, ranks].astype("float32"),
                "reason_item_id": reasons,
            }
        )


mlflow.models.set_model(RecsysPyfunc())
