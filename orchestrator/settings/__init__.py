"""One typed settings object, grouped by concern (``settings.fal.poll_initial_seconds``).

Precedence, lowest first: the bundled defaults (``orchestrator/settings/defaults.toml``,
generated from the model; ``config/orchestrator.toml`` links to it), the TOML file named by
``ORCH_CONFIG``, then environment variables (``ORCH_*`` with the names of before the grouping,
plus fal's own ``FAL_KEY``). A bad value raises :class:`~orchestrator.errors.ConfigError`
naming the variable. Secrets (FAL_KEY, the webhook signing key, passwords in the database and
broker URLs) are masked in ``repr``; ``.get_secret_value()`` gives the real value.
"""

from orchestrator.settings.catalog import SettingDoc, catalog
from orchestrator.settings.loading import bundled_defaults, get_settings, load_settings
from orchestrator.settings.models import Settings
from orchestrator.settings.registry import ENV_PREFIX, setting_name
from orchestrator.settings.secrets import MaskedUrl

__all__ = [
    "ENV_PREFIX",
    "MaskedUrl",
    "SettingDoc",
    "Settings",
    "bundled_defaults",
    "catalog",
    "get_settings",
    "load_settings",
    "setting_name",
]
