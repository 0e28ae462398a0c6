"""The Feast repository tests/integration/feast.rs makes: the same entity,
views and feature service as its fs-server registry (FEAST_SDK_REGISTRY).
The file sources only give the views a batch source; nothing reads them."""

from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, PushSource, FeatureService
from feast.types import Int64, Float64, String, Bool, Array
from feast.value_type import ValueType

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
batch_src = FileSource(name="stats_src", path="data/stats.parquet", timestamp_field="event_timestamp")
user_stats = FeatureView(
    name="user_stats", entities=[user], ttl=timedelta(days=1), source=batch_src,
    schema=[Field(name="country", dtype=String), Field(name="age_days", dtype=Int64),
            Field(name="avg_amount", dtype=Float64), Field(name="verified", dtype=Bool),
            Field(name="embedding", dtype=Array(Float64))],
    online=True,
)
act_batch = FileSource(name="act_src", path="data/act.parquet", timestamp_field="event_timestamp")
push = PushSource(name="activity_push", batch_source=act_batch)
user_activity = FeatureView(
    name="user_activity", entities=[user], ttl=timedelta(minutes=5), source=push,
    schema=[Field(name="tx_count_5m", dtype=Int64)], online=True,
)
fraud_v1 = FeatureService(name="fraud_v1", features=[user_activity[["tx_count_5m"]], user_stats[["country"]]])
