"""MLflow pyfunc served from code: loads the bundle's safetensors/JSON/Parquet, no pickle.

Input: a pandas frame with a `user_id` column and an optional `query` column (free text; empty
or missing means no query for that row). Params: `k` (default 20) and `query_weight` (share of
query relevance in the blend, default 0.5). Output: one row per (user, rank) with `item_id`,
`score` and `reason_item_id`, as in the recommendations table; seen items are excluded.

Queries are encoded by the encoder recorded in the bundle (the one that embedded its items),
loaded on the first query only, so serving without queries never loads transformers.
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
        self.encoder = None

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        from recsys_core.ranking import DEFAULT_QUERY_WEIGHT, QueryBlend, encode_queries, top_k

        params = params or {}
        k = int(params.get("k", 20))
        weight = float(params.get("query_weight", DEFAULT_QUERY_WEIGHT))
        user_ids = [str(u) for u in model_input["user_id"].tolist()]
        queries = [
            q if isinstance(q, str) and q.strip() else None
            for q in (model_input["query"] if "query" in model_input else [None] * len(user_ids))
        ]
        histories, _ = self.bundle.histories_for(user_ids)
        blend = None
        if any(queries):
            vectors = encode_queries(self._query_encoder(), queries)
            blend = QueryBlend(vectors, self.bundle.item_embeddings, weight)
        ranked = top_k(self.bundle.model, histories, k, explain=True, query=blend)
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

    def _query_encoder(self):
        """The encoder that embedded the bundle's items, loaded on the first query."""
        from recsys_core.ranking import load_query_encoder

        if self.bundle.item_embeddings is None:
            raise ValueError(
                "this model version carries no item embeddings, so it cannot rank by a query "
                "(encode items and train again to register one that can)"
            )
        if self.encoder is None:
            self.encoder = load_query_encoder(self.bundle.metadata)
        return self.encoder


mlflow.models.set_model(RecsysPyfunc())
