"""Point-in-time feature datasets with Ray Data, and the same features for single requests.

- :func:`build_features` (:mod:`kolray.features.build`): database → versioned token and KOL
  datasets under the storage URI (local or ``s3://``), split by time with purging and an embargo.
- :func:`token_features_online`, :func:`kol_features_online`, :class:`ServingFeatures`
  (:mod:`kolray.features.online`): the features of a request, computed by the same code.
- Definitions (:mod:`kolray.features.definitions`): the feature lists and the per-row arithmetic;
  context (:mod:`kolray.features.context`): what is known before a time; rows
  (:mod:`kolray.features.rows`), splits (:mod:`kolray.features.splits`).
"""

from kolray.features.build import BuildOptions, BuildResult, build_features
from kolray.features.definitions import (
    DEFAULT_EMBARGO_S,
    DEFAULT_HORIZON_S,
    KOL_FEATURES,
    KOL_TARGETS,
    SEED_KOL_FEATURES,
    SEED_TOKEN_FEATURES,
    TOKEN_FEATURES,
)
from kolray.features.online import ServingFeatures, TokenRequest, kol_features_online, token_features_online
from kolray.features.source import FeatureError
from kolray.features.splits import SplitFractions, SplitPlan

__all__ = [
    "DEFAULT_EMBARGO_S",
    "DEFAULT_HORIZON_S",
    "KOL_FEATURES",
    "KOL_TARGETS",
    "SEED_KOL_FEATURES",
    "SEED_TOKEN_FEATURES",
    "TOKEN_FEATURES",
    "BuildOptions",
    "BuildResult",
    "FeatureError",
    "ServingFeatures",
    "SplitFractions",
    "SplitPlan",
    "TokenRequest",
    "build_features",
    "kol_features_online",
    "token_features_online",
]
