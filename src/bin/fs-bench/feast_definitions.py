"""The Feast repository fs-bench's Feast rows apply (`feast apply`): one
entity and one batch view of five features of Feast's common types. The
fs-server registry of the same rows (FS_REGISTRY in feast.rs) declares the
same view. The file source only gives the view a batch source; nothing
reads it: the rows are written with `write_to_online_store`."""

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource
from feast.types import Array, Bool, Float64, Int64, String
from feast.value_type import ValueType

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
profile_source = FileSource(
    name="profile_src", path="data/profile.parquet", timestamp_field="event_timestamp"
)
user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=timedelta(days=1),
    source=profile_source,
    schema=[
        Field(name="country", dtype=String),
        Field(name="age_days", dtype=Int64),
        Field(name="avg_amount", dtype=Float64),
        Field(name="verified", dtype=Bool),
        Field(name="embedding", dtype=Array(Float64)),
    ],
    online=True,
)
