from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MetricsConfig(AppConfig):
    name = "metrics"
    verbose_name = _("Metrics")

    def ready(self):
        from . import customer_links, resultcache, survey_rollup

        resultcache.connect_signals()
        customer_links.connect_signals()
        survey_rollup.connect_signals()
