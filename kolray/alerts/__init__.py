"""Buy alerts: when a tracked KOL opens a position and a rule fires (P(3x), Diamond Hand score,
KOL consensus), store an alert, stream it (``GET /v1/alerts/stream``) and POST it to the
configured webhooks (generic JSON, Discord, Telegram) with retries; never twice.

- :mod:`kolray.alerts.rules`: the rules, dedupe keys, the payload and its message.
- :mod:`kolray.alerts.detect`: new swaps since a watermark → stored alerts.
- :mod:`kolray.alerts.webhooks`: targets, payload shapes, delivery with backoff.
- :mod:`kolray.alerts.runner`: the background runner beside the tracker, the lock, ``kolray alerts run``.
- :mod:`kolray.alerts.store`: reading alerts back (API, stream, UI, CLI).
"""

from kolray.alerts.detect import Evaluation, ModelSource, evaluate, read_watermark, start_watermark
from kolray.alerts.rules import RULES, AlertPayload, AlertRules, Buy, Facts, dedupe_key, fired
from kolray.alerts.runner import AlertRunner, AlertsBusy, alerts_lock, run_forever, run_once, tracking_hook
from kolray.alerts.store import AlertOut, AlertsOut, alerts_after, last_alert_id, recent_alerts
from kolray.alerts.webhooks import (
    AlertConfigError,
    Deliverer,
    DeliveryState,
    Webhook,
    render,
    webhooks_from_urls,
)

__all__ = [
    "RULES",
    "AlertConfigError",
    "AlertOut",
    "AlertPayload",
    "AlertRules",
    "AlertRunner",
    "AlertsBusy",
    "AlertsOut",
    "Buy",
    "Deliverer",
    "DeliveryState",
    "Evaluation",
    "Facts",
    "ModelSource",
    "Webhook",
    "alerts_after",
    "alerts_lock",
    "dedupe_key",
    "evaluate",
    "fired",
    "last_alert_id",
    "read_watermark",
    "recent_alerts",
    "render",
    "run_forever",
    "run_once",
    "start_watermark",
    "tracking_hook",
    "webhooks_from_urls",
]
